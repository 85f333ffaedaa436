"""``batch-augment``: random flips, affine warps, brightness/contrast and noise for a whole batch at once.

Runs on the compute device inside the training step (CPU or CUDA), so there is no per-sample Python and no
data-loader worker; on 2 CPU cores it is an order of magnitude faster than per-image libraries.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Augmenter

MIRRORS = (
    "{name} mirrors images left to right ({setting}): harmless where left and right carry no meaning (an "
    "OCT B-scan, most ultrasound), wrong where they do (a fundus photograph of a left eye mirrored looks like a right "
    "eye; a chest X-ray's heart is on one side): set {off} there"
)


class BatchAugment(Augmenter):
    """Batched on-device augmentation: flips, rotation/translation/scale, brightness, contrast, Gaussian noise."""

    name = "batch-augment"

    class Params(Params):
        hflip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
        vflip: float = Field(0.0, ge=0, le=1, description="probability of a vertical flip")
        rotate: float = Field(0.0, ge=0, le=180, description="max rotation in degrees (uniform +-)")
        translate: float = Field(0.0, ge=0, le=0.5, description="max shift as a fraction of the side")
        scale: float = Field(0.0, ge=0, lt=1, description="max zoom change (uniform 1 +- scale)")
        brightness: float = Field(0.0, ge=0, lt=1, description="max multiplicative brightness change")
        contrast: float = Field(0.0, ge=0, lt=1, description="max contrast change around each image's mean")
        noise: float = Field(0.0, ge=0, le=1, description="std of additive Gaussian noise")
        clip: bool = Field(True, description="clamp the result to the batch's value range ([0, 1] for uint8 images)")

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply_stacked(batch, [generator])

    def notes(self, variant):
        setting = f"hflip: {self.params.hflip:g}" + (
            ", its default" if "hflip" not in self.params.model_fields_set else ""
        )
        return [MIRRORS.format(name=self.name, setting=setting, off="hflip: 0")] if self.params.hflip else []

    def apply_stacked(self, batch: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """Member g's images are ``batch[g*n:(g+1)*n]`` and draw from ``generators[g]``, in the order one member's
        call draws them: each member gets what it gets alone, and the warps run once for all."""
        p = self.params
        n, device = batch.shape[0] // len(generators), batch.device

        def uniform(low: float = -1.0, high: float = 1.0) -> torch.Tensor:
            draws = [torch.rand(n, generator=generator, device=device) for generator in generators]
            return (draws[0] if len(draws) == 1 else torch.cat(draws)) * (high - low) + low

        def per_image(values: torch.Tensor) -> torch.Tensor:
            return values.view(-1, 1, 1, 1).to(batch.dtype)

        x = batch
        if p.hflip:
            x = torch.where(per_image(uniform(0, 1) < p.hflip).bool(), x.flip(-1), x)
        if p.vflip:
            x = torch.where(per_image(uniform(0, 1) < p.vflip).bool(), x.flip(-2), x)
        if p.rotate or p.translate or p.scale:
            angle = uniform() * math.radians(p.rotate)
            zoom = 1 + uniform() * p.scale
            cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
            shift_x, shift_y = uniform() * 2 * p.translate, uniform() * 2 * p.translate
            theta = torch.stack([cos, -sin, shift_x, sin, cos, shift_y], dim=1).view(-1, 2, 3).to(x.dtype)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if p.brightness:
            x = x * per_image(1 + uniform() * p.brightness)
        if p.contrast:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * per_image(1 + uniform() * p.contrast) + mean
        if p.noise:
            shape = (n, *x.shape[1:])
            noise = [torch.randn(shape, generator=g, device=device, dtype=x.dtype) for g in generators]
            x = x + (noise[0] if len(noise) == 1 else torch.cat(noise)) * p.noise
        low, high = self.value_range
        return x.clamp(low, high) if p.clip else x


@hookimpl
def register_augmenters(register):
    register(BatchAugment)
