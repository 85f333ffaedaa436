"""Test-time augmentation: the held-out fold and the test split evaluated on flipped and shifted views of each
image, the logits averaged (airbench's flip-TTA on CIFAR-10; shifts as in its translate variant). Training is not
touched: the views exist only where the trained model predicts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from octbench_plugins.augment import MIRRORS
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Regularizer


class FlipShiftTTA(Regularizer):
    """The mean of the logits over the image, its mirror images and shifted copies (evaluation only)."""

    name = "tta"

    class Params(Params):
        hflip: bool = Field(True, description="add the left-right mirror image")
        vflip: bool = Field(False, description="add the upside-down image (OCT scans have a top and a bottom)")
        shift: int = Field(0, ge=0, le=8, description="add copies shifted by this many pixels up, down, left, right")

    def notes(self, variant):
        setting = "hflip: true" + (", its default" if "hflip" not in self.params.model_fields_set else "")
        return [MIRRORS.format(name=self.name, setting=setting, off="hflip: false")] if self.params.hflip else []

    def test_views(self, images: torch.Tensor) -> list[torch.Tensor]:
        views = [images]
        if self.params.shift:
            views += [shifted(images, dy, dx) for dy, dx in _directions(self.params.shift)]
        if self.params.hflip:
            views += [view.flip(-1) for view in views]
        if self.params.vflip:
            views += [view.flip(-2) for view in views]
        return views


def _directions(step: int) -> list[tuple[int, int]]:
    return [(-step, 0), (step, 0), (0, -step), (0, step)]


def shifted(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``images`` moved by (dy, dx) pixels, the uncovered border filled with zeros (not wrapped around)."""
    height, width = images.shape[-2:]
    padded = F.pad(images, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top : top + height, left : left + width]


@hookimpl
def register_regularizers(register):
    register(FlipShiftTTA)
