"""Regularizers that act on the model and its weights: early stopping, weight decay, dropout, weight averaging."""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Regularizer

Monitor = Literal["val_loss", "val_acc"]


class Tracker:
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
        self.tracker_ = Tracker(self.params.monitor, self.params.min_delta)
        self.best_state_ = None
        self.best_epoch_ = self.last_epoch_ = 0
        return model

    def on_epoch_end(self, epoch, logs, model):
        self.last_epoch_ = epoch + 1
        if self.tracker_.update(logs):
            self.best_epoch_ = epoch + 1
            if self.params.restore_best:
                self.best_state_ = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return self.tracker_.since >= self.params.patience

    def cell_values(self):
        return {"best epoch": self.best_epoch_, "epochs trained": self.last_epoch_}

    def on_train_end(self, model):
        if self.best_state_ is not None:
            model.load_state_dict(self.best_state_)

    @property
    def chooses_final_weights(self):
        return self.params.restore_best


class WeightDecay(Regularizer):
    """Decoupled weight decay (Adam becomes AdamW; SGD keeps its own coupled decay)."""

    name = "weight-decay"

    class Params(Params):
        weight_decay: float = Field(1e-4, gt=0, description="decay coefficient")

    def configure_optimizer(self, options):
        name = "adamw" if options["name"] == "adam" else options["name"]
        return {**options, "name": name, "weight_decay": self.params.weight_decay}


class Dropout(Regularizer):
    """Set the dropout before the classifier's last linear layer, inserting one if the model has none there."""

    name = "dropout"

    class Params(Params):
        p: float = Field(0.5, ge=0, lt=1, description="drop probability in the classifier head")

    def configure_model(self, model):
        linear_names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        if not linear_names:
            raise ValueError(f"dropout: {type(model).__name__} has no linear classifier layer to put dropout before")
        *parent_path, attribute = linear_names[-1].split(".")
        parent = model.get_submodule(".".join(parent_path))
        linear = getattr(parent, attribute)
        if isinstance(parent, nn.Sequential) and attribute.isdigit() and int(attribute) > 0:
            before = parent[int(attribute) - 1]
            if isinstance(before, nn.Dropout):
                before.p = self.params.p
                return model
        setattr(parent, attribute, nn.Sequential(nn.Dropout(self.params.p), linear))
        return model


class EMA(Regularizer):
    """Exponential moving average of the weights, used for evaluation after training."""

    name = "ema"

    class Params(Params):
        decay: float = Field(0.999, gt=0, lt=1, description="weight of the running average per step")

    def configure_model(self, model):
        self.average_ = copy.deepcopy(model).requires_grad_(False)
        return model

    @torch.no_grad()
    def after_step(self, model):
        for avg, current in zip(self.average_.parameters(), model.parameters(), strict=True):
            avg.lerp_(current.detach(), 1 - self.params.decay)
        for avg, current in zip(self.average_.buffers(), model.buffers(), strict=True):
            avg.copy_(current)

    def on_train_end(self, model):
        model.load_state_dict(self.average_.state_dict())

    @property
    def chooses_final_weights(self):
        return True


@hookimpl
def register_regularizers(register):
    for cls in (EarlyStopping, WeightDecay, Dropout, EMA):
        register(cls)
