"""Geometry preprocessors: ``resize`` (OpenCV, interpolation named) and ``pad`` (centred zero-padding, as
MedMNIST+ feeds 28 px images to 224 px backbones). Both act on each image alone and learn nothing, so the run applies
them once to the whole dataset and caches the result; the model is built for the size they produce."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Preprocessor

INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


class Resize(Preprocessor):
    """Every image resized to ``size`` x ``size`` pixels (OpenCV ``cv2.resize``, interpolation named)."""

    name = "resize"
    stateless = True
    changes_shape = True

    class Params(Params):
        size: int = Field(64, ge=4, le=1024, description="side of the output images in pixels")
        interpolation: Literal["nearest", "linear", "cubic", "area", "lanczos"] = Field(
            "linear", description="OpenCV's: linear (bilinear) or cubic to enlarge, area to shrink"
        )

    def transform(self, images: np.ndarray) -> np.ndarray:
        size, flag = self.params.size, INTERPOLATIONS[self.params.interpolation]
        if images.shape[1:3] == (size, size):
            return images
        out = np.empty((len(images), size, size, images.shape[-1]), dtype=images.dtype)
        for i, image in enumerate(images):
            out[i] = cv2.resize(image, (size, size), interpolation=flag).reshape(size, size, -1)
        return out


class Pad(Preprocessor):
    """Every image padded with a constant (zero) border to ``size`` x ``size`` pixels, centred."""

    name = "pad"
    stateless = True
    changes_shape = True

    class Params(Params):
        size: int = Field(224, ge=4, le=1024, description="side of the output images in pixels")
        value: float = Field(0.0, description="the border's value (0: black)")

    def transform(self, images: np.ndarray) -> np.ndarray:
        size = self.params.size
        height, width = images.shape[1:3]
        if height > size or width > size:
            raise ValueError(f"pad: images are {height}x{width} px, larger than size {size}; resize them instead")
        top, left = (size - height) // 2, (size - width) // 2
        widths = ((0, 0), (top, size - height - top), (left, size - width - left), (0, 0))
        return np.pad(images, widths, constant_values=images.dtype.type(self.params.value))


@hookimpl
def register_preprocessors(register):
    register(Resize)
    register(Pad)
