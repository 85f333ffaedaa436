"""Preprocessors that change the image's shape: grayscale to RGB, and a resize."""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Preprocessor


class ToRGB(Preprocessor):
    """Grayscale to three identical channels (RGB stays RGB)."""

    name = "to-rgb"
    stateless = True
    changes_shape = True

    def transform(self, images):
        return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


class Resize(Preprocessor):
    """Resize every image to ``size`` pixels square (OpenCV, area interpolation)."""

    name = "resize"
    stateless = True
    changes_shape = True

    class Params(Params):
        size: int = Field(32, ge=4, le=512, description="side in pixels")

    def transform(self, images):
        side = self.params.size
        out = np.stack([cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA) for image in images])
        return out.reshape(len(images), side, side, images.shape[-1]).astype(images.dtype)


@hookimpl
def register_preprocessors(register):
    register(ToRGB)
    register(Resize)
