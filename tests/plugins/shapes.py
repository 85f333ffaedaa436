"""A preprocessor that changes the image's channels: grayscale to RGB (resizing is the built-in ``resize``)."""

from __future__ import annotations

import numpy as np

from octbench import hookimpl
from octbench.technique import Preprocessor


class ToRGB(Preprocessor):
    """Grayscale to three identical channels (RGB stays RGB)."""

    name = "to-rgb"
    stateless = True
    changes_shape = True

    def transform(self, images):
        return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


@hookimpl
def register_preprocessors(register):
    register(ToRGB)
