"""``albumentations``: any albumentations transform by name and parameters, applied per image on the CPU.

The per-image counterpart of ``batch-augment``, for policies only albumentations offers and for comparing the
two. Images are converted to uint8 HWC for albumentations and back, mapping the batch's value range onto 0..255.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from pydantic import Field, field_validator

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Augmenter

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations phones home at import otherwise


def _albumentations():
    import albumentations

    return albumentations


class Albumentations(Augmenter):
    """Per-image albumentations pipeline: a list of {name: TransformClass, ...its parameters}."""

    name = "albumentations"

    class Params(Params):
        transforms: list[dict[str, Any]] = Field(
            default_factory=lambda: [{"name": "HorizontalFlip", "p": 0.5}],
            min_length=1,
            description="albumentations transforms, each {name: Class, param: value, ...}",
        )

        @field_validator("transforms")
        @classmethod
        def _known(cls, transforms):
            A = _albumentations()
            for spec in transforms:
                name = spec.get("name")
                if not isinstance(name, str) or not isinstance(getattr(A, name, None), type):
                    raise ValueError(f"{name!r} is not an albumentations transform class (e.g. HorizontalFlip)")
            return transforms

    def _pipeline(self):
        if not hasattr(self, "pipeline_"):
            A = _albumentations()
            steps = [
                getattr(A, s["name"])(**{k: v for k, v in s.items() if k != "name"}) for s in self.params.transforms
            ]
            self.pipeline_ = A.Compose(steps)
        return self.pipeline_

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        pipeline = self._pipeline()
        pipeline.set_random_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=batch.device)))
        low, high = self.value_range  # albumentations works on uint8: map the batch's range onto 0..255 and back
        scale = 255 / max(high - low, 1e-12)
        images = ((batch.detach().clamp(low, high) - low) * scale).round().to(torch.uint8)
        images = images.permute(0, 2, 3, 1).cpu().numpy()
        out = np.stack([pipeline(image=image)["image"] for image in images])
        if out.ndim == 3:
            out = out[..., None]
        return torch.from_numpy(out).to(batch.device).permute(0, 3, 1, 2).to(batch.dtype).div_(scale).add_(low)


@hookimpl
def register_augmenters(register):
    register(Albumentations)
