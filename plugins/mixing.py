"""Mixup and CutMix: train on blends of pairs of images, with correspondingly blended targets."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Regularizer


class _Mixing(Regularizer):
    """Shared set-up: a host-side generator for the mixing ratio (no device sync per step), the class count."""

    class Params(Params):
        alpha: float = Field(0.2, gt=0, description="Beta(alpha, alpha) distribution of the mixing ratio")
        p: float = Field(1.0, gt=0, le=1, description="probability of mixing a batch")

    def configure_model(self, model):
        self.rng_ = np.random.default_rng(torch.initial_seed())  # the cell's seed: reproducible and paired
        return model

    def configure_loss(self, options, class_counts):
        self.classes_ = len(class_counts)
        return options

    def _targets(self, targets):
        return F.one_hot(targets, self.classes_).float() if targets.ndim == 1 else targets

    def on_batch(self, images, targets, generator):
        if self.rng_.random() >= self.params.p:
            return images, targets
        lam = float(self.rng_.beta(self.params.alpha, self.params.alpha))
        order = torch.randperm(len(images), generator=generator, device=images.device)
        images, lam = self.mix(images, images[order], lam)
        soft = self._targets(targets)
        return images, lam * soft + (1 - lam) * soft[order]

    def mix(self, images, others, lam):
        raise NotImplementedError


class Mixup(_Mixing):
    """Mixup (Zhang et al. 2018): convex combinations of image pairs and their labels."""

    name = "mixup"

    def mix(self, images, others, lam):
        return lam * images + (1 - lam) * others, lam


class CutMix(_Mixing):
    """CutMix (Yun et al. 2019): paste a random box from another image; labels mixed by area."""

    name = "cutmix"

    class Params(_Mixing.Params):
        alpha: float = Field(1.0, gt=0, description="Beta(alpha, alpha) distribution of the kept area")

    def mix(self, images, others, lam):
        height, width = images.shape[-2:]
        cut = np.sqrt(1 - lam)
        h, w = int(height * cut), int(width * cut)
        cy, cx = self.rng_.integers(height), self.rng_.integers(width)
        y0, y1 = np.clip([cy - h // 2, cy + h // 2], 0, height)
        x0, x1 = np.clip([cx - w // 2, cx + w // 2], 0, width)
        mixed = images.clone()
        mixed[..., y0:y1, x0:x1] = others[..., y0:y1, x0:x1]
        return mixed, 1 - (y1 - y0) * (x1 - x0) / (height * width)


@hookimpl
def register_regularizers(register):
    register(Mixup)
    register(CutMix)
