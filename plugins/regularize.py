"""Regularizers and training schedules: early stopping, LR on plateau, weight decay, label smoothing, class weights."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Regularizer

Monitor = Literal["val_loss", "val_acc"]


class _Tracker:
    """Best value of a monitored metric and epochs since it improved."""

    def __init__(self, monitor: str, min_delta: float) -> None:
        self.sign = -1.0 if monitor.endswith("loss") else 1.0
        self.monitor, self.min_delta = monitor, min_delta
        self.best, self.since = -np.inf, 0

    def update(self, logs: dict[str, float]) -> bool:
        """True when this epoch improved on the best so far."""
        value = self.sign * logs[self.monitor]
        if value > self.best + self.min_delta:
            self.best, self.since = value, 0
            return True
        self.since += 1
        return False


class EarlyStopping(Regularizer):
    """Stop when the monitored inner-validation metric stops improving; optionally restore the best weights."""

    name = "early-stopping"

    class Params(Params):
        patience: int = Field(5, ge=1, description="epochs without improvement before stopping")
        monitor: Monitor = Field("val_loss", description="metric on the inner validation split")
        min_delta: float = Field(0.0, ge=0, description="smallest change that counts as improvement")
        restore_best: bool = Field(True, description="end with the weights of the best epoch")

    def configure_model(self, model):
        self.tracker_ = _Tracker(self.params.monitor, self.params.min_delta)
        self.best_state_ = None
        return model

    def on_epoch_end(self, epoch, logs, model):
        if self.tracker_.update(logs) and self.params.restore_best:
            self.best_state_ = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return self.tracker_.since >= self.params.patience

    def on_train_end(self, model):
        if self.best_state_ is not None:
            model.load_state_dict(self.best_state_)


class _PlateauScheduler:
    def __init__(self, optimizer, params) -> None:
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min" if params.monitor.endswith("loss") else "max",
            factor=params.factor,
            patience=params.patience,
            min_lr=params.min_lr,
        )
        self.monitor = params.monitor

    def step_epoch(self, logs: dict[str, float]) -> None:
        self.scheduler.step(logs[self.monitor])


class ReduceOnPlateau(Regularizer):
    """Multiply the learning rate by ``factor`` when the monitored metric plateaus (torch ReduceLROnPlateau)."""

    name = "reduce-on-plateau"

    class Params(Params):
        factor: float = Field(0.5, gt=0, lt=1, description="LR multiplier on a plateau")
        patience: int = Field(2, ge=0, description="epochs without improvement before reducing")
        monitor: Monitor = Field("val_loss", description="metric on the inner validation split")
        min_lr: float = Field(1e-6, ge=0, description="lower bound on the learning rate")

    def make_scheduler(self, optimizer, epochs, steps_per_epoch):
        return _PlateauScheduler(optimizer, self.params)


class WeightDecay(Regularizer):
    """Decoupled weight decay (AdamW-style; SGD keeps its own coupled decay)."""

    name = "weight-decay"

    class Params(Params):
        weight_decay: float = Field(1e-4, gt=0, description="decay coefficient")

    def configure_optimizer(self, options):
        name = "adamw" if options["name"] == "adam" else options["name"]
        return {**options, "name": name, "weight_decay": self.params.weight_decay}


class LabelSmoothing(Regularizer):
    """Cross-entropy against smoothed targets."""

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
        weights = weights / weights.mean()
        return {**options, "weight": torch.tensor(weights, dtype=torch.float32)}


@hookimpl
def register_regularizers(register):
    for cls in (EarlyStopping, ReduceOnPlateau, WeightDecay, LabelSmoothing, ClassWeights):
        register(cls)
