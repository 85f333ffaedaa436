"""Loss-side answers to noise and imbalance: label smoothing, inverse-frequency class weights, focal loss."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Regularizer


class LabelSmoothing(Regularizer):
    """Train against smoothed targets."""

    name = "label-smoothing"

    class Params(Params):
        smoothing: float = Field(0.1, gt=0, lt=1, description="probability mass spread over all classes")

    def configure_loss(self, options, class_counts):
        return {**options, "label_smoothing": self.params.smoothing}


class ClassWeights(Regularizer):
    """Inverse-frequency class weights in the loss: the non-resampling answer to imbalance."""

    name = "class-weights"

    class Params(Params):
        power: float = Field(1.0, gt=0, le=2, description="weights are (1/frequency) ** power, mean 1")

    def configure_loss(self, options, class_counts):
        counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1)
        weights = (counts.sum() / counts) ** self.params.power
        return {**options, "weight": torch.tensor(weights / weights.mean(), dtype=torch.float32)}


def focal_loss(logits, targets, weight=None, label_smoothing=0.0, *, gamma: float = 2.0):
    """Focal loss (Lin et al. 2017) for integer or probability targets; gamma 0 is cross-entropy."""
    classes = logits.shape[1]
    log_p = F.log_softmax(logits, dim=1)
    target = F.one_hot(targets, classes).to(log_p.dtype) if targets.ndim == 1 else targets
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / classes
    per_class = -target * (1 - log_p.exp()).pow(gamma) * log_p
    if weight is None:
        return per_class.sum(1).mean()
    per_class = per_class * weight
    norm = (target * weight).sum()  # like cross_entropy's weighted mean
    return per_class.sum() / norm.clamp_min(1e-12)


class FocalLoss(Regularizer):
    """Focal loss: down-weights easy examples so training focuses on hard (often minority) ones."""

    name = "focal-loss"

    class Params(Params):
        gamma: float = Field(2.0, ge=0, le=10, description="focusing parameter (0 = cross-entropy)")

    def configure_loss(self, options, class_counts):
        return {**options, "function": functools.partial(focal_loss, gamma=self.params.gamma)}


@hookimpl
def register_regularizers(register):
    for cls in (LabelSmoothing, ClassWeights, FocalLoss):
        register(cls)
