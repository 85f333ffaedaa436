"""Resamplers from imbalanced-learn, on image arrays: they only ever see a fold's training part."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Resampler


def resample_images(sampler, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten, resample in float32, restore shape and dtype.

    imbalanced-learn interpolates in the input dtype: on uint8 the differences wrap around and about half of the
    synthetic pixels come out wrong, hence float32 and rounding back.
    """
    shape = images.shape[1:]
    flat = images.reshape(len(images), -1).astype(np.float32, copy=False)
    new_flat, new_labels = sampler.fit_resample(flat, labels)
    if images.dtype == np.uint8:
        new_flat = np.clip(np.rint(new_flat), 0, 255).astype(np.uint8)
    return new_flat.reshape(len(new_flat), *shape), np.asarray(new_labels, dtype=np.int64)


class SMOTE(Resampler):
    """SMOTE (imbalanced-learn): synthetic minority images interpolated between same-class neighbours."""

    name = "smote"

    class Params(Params):
        k_neighbors: int = Field(5, ge=1, description="same-class neighbours to interpolate towards")
        sampling_strategy: Literal["auto", "minority", "not minority", "not majority", "all"] | float = Field(
            "auto", description="imbalanced-learn's sampling_strategy"
        )

    def fit_resample(self, images, labels, *, random_state):
        from imblearn.over_sampling import SMOTE as ImbSMOTE

        sampler = ImbSMOTE(
            k_neighbors=self.params.k_neighbors,
            sampling_strategy=self.params.sampling_strategy,
            random_state=random_state,
        )
        return resample_images(sampler, images, labels)


@hookimpl
def register_preprocessors(register):
    register(SMOTE)
