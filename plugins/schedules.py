"""Optimizer choice per variant, and learning-rate schedules: on plateau, cosine, one-cycle, MedMNIST's multistep."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Regularizer


class _PerBatch:
    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler

    def step_batch(self) -> None:
        self.scheduler.step()


class _PerEpoch:
    def __init__(self, scheduler, monitor: str | None = None) -> None:
        self.scheduler, self.monitor = scheduler, monitor

    def step_epoch(self, logs) -> None:
        if self.monitor:
            self.scheduler.step(logs[self.monitor])
        else:
            self.scheduler.step()


class ReduceOnPlateau(Regularizer):
    """Multiply the learning rate by ``factor`` when the monitored metric plateaus (torch ReduceLROnPlateau)."""

    name = "reduce-on-plateau"

    class Params(Params):
        factor: float = Field(0.5, gt=0, lt=1, description="LR multiplier on a plateau")
        patience: int = Field(2, ge=0, description="epochs without improvement before reducing")
        monitor: Literal["val_loss", "val_acc"] = Field("val_loss", description="inner-validation metric")
        min_lr: float = Field(1e-6, ge=0, description="lower bound on the learning rate")

    def make_scheduler(self, optimizer, epochs, steps_per_epoch):
        p = self.params
        mode = "min" if p.monitor.endswith("loss") else "max"
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=p.factor, patience=p.patience, min_lr=p.min_lr
        )
        return _PerEpoch(plateau, p.monitor)


class Cosine(Regularizer):
    """Cosine annealing from the optimizer's LR to ``min_lr`` over the whole run, stepped every batch."""

    name = "cosine"

    class Params(Params):
        min_lr: float = Field(0.0, ge=0, description="final learning rate")

    def make_scheduler(self, optimizer, epochs, steps_per_epoch):
        total = max(1, epochs * steps_per_epoch)
        return _PerBatch(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total, eta_min=self.params.min_lr))


class OneCycle(Regularizer):
    """One-cycle policy (Smith 2018): warm up to ``max_lr_factor`` x the LR, then anneal, stepped every batch."""

    name = "one-cycle"

    class Params(Params):
        max_lr_factor: float = Field(10.0, ge=1, description="peak LR as a multiple of the optimizer's LR")
        pct_start: float = Field(0.3, gt=0, lt=1, description="share of steps spent warming up")

    def make_scheduler(self, optimizer, epochs, steps_per_epoch):
        peak = [group["lr"] * self.params.max_lr_factor for group in optimizer.param_groups]
        cycle = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=peak, total_steps=max(1, epochs * steps_per_epoch), pct_start=self.params.pct_start
        )
        return _PerBatch(cycle)


class MultiStep(Regularizer):
    """Multiply the LR by ``gamma`` at fractions of the run (MedMNIST's baseline: 0.1 at 50% and 75%)."""

    name = "multistep"

    class Params(Params):
        milestones: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
            [0.5, 0.75], min_length=1, description="fractions of the epochs, each between 0 and 1"
        )
        gamma: float = Field(0.1, gt=0, lt=1, description="LR multiplier at each milestone")

    def make_scheduler(self, optimizer, epochs, steps_per_epoch):
        epochs_at = sorted({max(1, round(m * epochs)) for m in self.params.milestones})
        return _PerEpoch(torch.optim.lr_scheduler.MultiStepLR(optimizer, epochs_at, gamma=self.params.gamma))


class VariantOptimizer(Regularizer):
    """Use another optimizer for this variant than the suite's train.optimizer (any registered one)."""

    name = "optimizer"

    class Params(Params):
        algorithm: str = Field("sgd", description="the optimizer plugin (adam, adamw, sgd, ...)")
        lr: float | None = Field(None, gt=0, description="learning rate (default: the suite's)")
        momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
        nesterov: bool = Field(False, description="Nesterov momentum (SGD)")
        weight_decay: float | None = Field(None, ge=0, description="weight decay (default: the suite's)")

    def configure_optimizer(self, options):
        p = self.params
        changed = {"name": p.algorithm, "momentum": p.momentum, "nesterov": p.nesterov}
        if p.lr is not None:
            changed["lr"] = p.lr
        if p.weight_decay is not None:
            changed["weight_decay"] = p.weight_decay
        return {**options, **changed}


@hookimpl
def register_regularizers(register):
    for cls in (VariantOptimizer, ReduceOnPlateau, Cosine, OneCycle, MultiStep):
        register(cls)
