"""Resamplers from imbalanced-learn, on image arrays: they only ever see a fold's training part."""

from __future__ import annotations

import importlib
from typing import Literal

import numpy as np
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Resampler

Strategy = Literal["auto", "minority", "not minority", "not majority", "all"] | float


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


class _Imblearn(Resampler):
    """Builds an imbalanced-learn sampler from the parameters and applies it to images."""

    sampler_path: str

    def fit_resample(self, images, labels, *, random_state):
        module, _, name = self.sampler_path.rpartition(".")
        sampler_cls = getattr(importlib.import_module(module), name)
        sampler = sampler_cls(random_state=random_state, **self.params.model_dump())
        return resample_images(sampler, images, labels)


class SMOTEParams(Params):
    k_neighbors: int = Field(5, ge=1, description="same-class neighbours to interpolate towards")
    sampling_strategy: Strategy = Field("auto", description="imbalanced-learn's sampling_strategy")


class SMOTE(_Imblearn):
    """SMOTE (imbalanced-learn): synthetic minority images interpolated between same-class neighbours."""

    name = "smote"
    sampler_path = "imblearn.over_sampling.SMOTE"
    Params = SMOTEParams


class BorderlineSMOTE(_Imblearn):
    """Borderline-SMOTE (imbalanced-learn): SMOTE from minority samples near the class border only."""

    name = "borderline-smote"
    sampler_path = "imblearn.over_sampling.BorderlineSMOTE"

    class Params(SMOTEParams):
        m_neighbors: int = Field(10, ge=1, description="neighbours that decide whether a sample is in danger")
        kind: Literal["borderline-1", "borderline-2"] = Field("borderline-1", description="variant")


class ADASYN(_Imblearn):
    """ADASYN (imbalanced-learn): more synthetic samples where the minority class is harder to learn."""

    name = "adasyn"
    sampler_path = "imblearn.over_sampling.ADASYN"

    class Params(Params):
        n_neighbors: int = Field(5, ge=1, description="neighbours used for density and interpolation")
        sampling_strategy: Strategy = Field("auto", description="imbalanced-learn's sampling_strategy")


class RandomOversample(_Imblearn):
    """Random oversampling (imbalanced-learn): duplicate minority images."""

    name = "random-oversample"
    sampler_path = "imblearn.over_sampling.RandomOverSampler"

    class Params(Params):
        sampling_strategy: Strategy = Field("auto", description="imbalanced-learn's sampling_strategy")


class RandomUndersample(_Imblearn):
    """Random undersampling (imbalanced-learn): drop majority images."""

    name = "random-undersample"
    sampler_path = "imblearn.under_sampling.RandomUnderSampler"

    class Params(Params):
        sampling_strategy: Literal["auto", "majority", "not minority", "not majority", "all"] | float = Field(
            "auto", description="imbalanced-learn's sampling_strategy"
        )


@hookimpl
def register_preprocessors(register):
    for cls in (SMOTE, BorderlineSMOTE, ADASYN, RandomOversample, RandomUndersample):
        register(cls)
