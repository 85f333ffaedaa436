"""Intensity preprocessors: CLAHE and histogram equalisation (OpenCV) and per-dataset normalisation.

On RGB images both act on the lightness channel (CIE L*a*b*), leaving colour alone.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Preprocessor


def per_image_lightness(images: np.ndarray, operation, technique: str) -> np.ndarray:
    """Apply ``operation`` (uint8 HxW -> uint8 HxW) to each image's gray or L* channel."""
    if images.dtype != np.uint8:
        raise TypeError(f"{technique} needs uint8 images; got {images.dtype}. List it before float-producing steps.")
    out = np.empty_like(images)
    channels = images.shape[-1]
    for i, image in enumerate(images):
        if channels == 1:
            out[i, ..., 0] = operation(image[..., 0])
        else:
            lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
            lab[..., 0] = operation(lab[..., 0])
            out[i] = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    return out


class CLAHE(Preprocessor):
    """Contrast-limited adaptive histogram equalisation (OpenCV), per image."""

    name = "clahe"
    stateless = True

    class Params(Params):
        clip_limit: float = Field(2.0, gt=0, description="contrast limit per tile")
        tile_grid: int = Field(8, ge=1, le=64, description="tiles per side")

    def transform(self, images: np.ndarray) -> np.ndarray:
        clahe = cv2.createCLAHE(clipLimit=self.params.clip_limit, tileGridSize=(self.params.tile_grid,) * 2)
        return per_image_lightness(images, clahe.apply, self.name)


class HistEq(Preprocessor):
    """Global histogram equalisation (OpenCV), per image."""

    name = "hist-eq"
    stateless = True

    def transform(self, images: np.ndarray) -> np.ndarray:
        return per_image_lightness(images, cv2.equalizeHist, self.name)


class Normalize(Preprocessor):
    """Per-channel standardisation with mean and std fitted on the fold's training part; outputs float32."""

    name = "normalize"

    def fit(self, images, labels):
        scaled = _unit(images)
        self.mean_ = scaled.mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
        self.std_ = np.maximum(scaled.std(axis=(0, 1, 2), dtype=np.float64), 1e-6).astype(np.float32)
        return self

    def transform(self, images):
        return (_unit(images) - self.mean_) / self.std_


def _unit(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255 if images.dtype == np.uint8 else images.astype(np.float32, copy=False)


@hookimpl
def register_preprocessors(register):
    for cls in (CLAHE, HistEq, Normalize):
        register(cls)
