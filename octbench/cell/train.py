"""Training with the data resident on the compute device (inference is ``octbench.cell.inference``).

Images travel to the device once per cell, as stored (uint8 stays uint8), and each batch is gathered, scaled
and augmented there as one tensor: no data-loader workers, no per-sample Python in the hot loop. The host reads
the device once per epoch (loss, accuracy, the NaN check) and never inside a step.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from octbench.cell.device import as_float, autocast, clock
from octbench.cell.inference import eval_batch_size, evaluate_loss
from octbench.cell.stack_model import probe, signature, unstackable
from octbench.cell.stack_train import Stack, guard
from octbench.data.files import cache_dir
from octbench.errors import CellFailed
from octbench.params import validate_params
from octbench.plugins import default_host
from octbench.suite import Train
from octbench.technique import Regularizer


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    validate_seconds: float = 0.0
    images_per_s: float = 0.0
    warm: bool = False
    epochs_run: int = 0


def to_device(images: np.ndarray, labels: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W, C) numpy -> (N, C, H, W) tensor on ``device``, keeping uint8 as uint8."""
    # torch tensors share numpy's memory and may be written; the arrays octbench hands around are read-only
    x = torch.from_numpy(np.require(images.transpose(0, 3, 1, 2), requirements=["C", "W"])).to(device)
    return x, torch.from_numpy(np.require(labels, dtype=np.int64, requirements=["W"])).to(device)


def bf16_native(device: torch.device) -> bool:
    """Whether bf16 arithmetic is fast here: CUDA from Ampere on, CPUs with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def fast_path(config: Train, device: torch.device) -> tuple[bool, bool]:
    """(bf16 autocast, channels-last): both on wherever bf16 is native, channels-last on CPU and CUDA (measured for
    the seed CNN in docs/benchmarks.md, section 1)."""
    bf16 = config.precision == "bf16" or (config.precision == "auto" and bf16_native(device))
    return bf16, device.type in ("cpu", "cuda")


COMMON_OPTIONS = ("name", "lr", "weight_decay")


def optimizer_options(config: Train, regularizers: list[Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The optimizer options a cell builds with: ``train.optimizer``'s, through each regularizer's
    ``configure_optimizer`` in suite order; and, per option a regularizer added or changed, the last one that did.
    The trainer, the dependency list and the search's check all ask this one function."""
    options: dict[str, Any] = config.optimizer.options()
    changed_by: dict[str, str] = {}
    for reg in regularizers:
        updated = reg.configure_optimizer(dict(options))
        changed_by.update({k: reg.name for k, v in updated.items() if k not in options or options[k] != v})
        options = updated
    return options, changed_by


def optimizer_technique(options: dict[str, Any], host: Any = None, origin: dict[str, str] | None = None) -> Any:
    """The optimizer plugin ``options['name']`` with whichever of ``options`` are its parameters. An option meant for
    another optimizer plugin (``momentum`` beside adam, from the ``optimizer`` regularizer) is left out; one that no
    optimizer plugin takes (torch's ``amsgrad``, ``maximize``, ``dampening``) is refused, naming where it came from
    (``origin``: option -> who set it), rather than dropped."""
    host = host or default_host()
    cls = host.get("optimizer", options["name"]).cls
    known = {f for reg in host.all() if reg.kind == "optimizer" for f in reg.cls.Params.model_fields}
    unknown = sorted(k for k in options if k not in known and k not in COMMON_OPTIONS)
    if unknown:
        where = "; ".join(f"{k} from {(origin or {}).get(k, 'a regularizer')}" for k in unknown)
        takes = ", ".join([*COMMON_OPTIONS[1:], *cls.Params.model_fields])
        raise CellFailed(
            f"optimizer '{cls.name}' does not take {', '.join(unknown)} ({where}), nor does any other optimizer "
            f"plugin: it takes {takes}. Write an optimizer plugin with that parameter rather than pass it through"
        )
    own = {k: v for k, v in options.items() if k in cls.Params.model_fields}
    return cls(validate_params(cls.Params, cls.name, own))


def make_optimizer(
    model: torch.nn.Module, options: dict[str, Any], device: torch.device, host: Any = None, technique: Any = None
) -> torch.optim.Optimizer:
    """The optimizer plugin ``options['name']`` built over ``model``'s parameters, with ``lr`` and
    ``weight_decay``."""
    technique = technique or optimizer_technique(options, host)
    return technique.build(
        model.parameters(), lr=options["lr"], weight_decay=options.get("weight_decay", 0.0), device=device
    )


def train(
    model: torch.nn.Module,
    train_xy: tuple[torch.Tensor, torch.Tensor],
    val_xy: tuple[torch.Tensor, torch.Tensor],
    *,
    config: Train,
    epochs: int,
    augmenters: list[Any],
    regularizers: list[Any],
    seed: int,
    num_classes: int,
    on_epoch: Any = None,
    deadline: float | None = None,
    fast: tuple[bool, bool] | None = None,
) -> TrainResult:
    """Train one model: a stack of one (``train_stack``). Raises ``CellFailed`` (or the plugin's own exception)
    when the cell fails."""
    learner = Learner(
        model,
        train_xy,
        val_xy,
        config=config,
        epochs=epochs,
        augmenters=augmenters,
        regularizers=regularizers,
        seed=seed,
        num_classes=num_classes,
        deadline=deadline,
        fast=fast,
    )
    train_stack([learner], epochs=epochs, on_epoch=on_epoch)
    if learner.error is not None:
        raise learner.error
    return learner.result


class Learner:
    """One cell's training state: its own model, data, optimizer, loss, schedulers, regularizers and random streams.

    ``seed`` seeds independent random streams (``stream``): the batch order, each augmenter, each regularizer and
    dropout draw from their own, so adding a technique that draws random numbers leaves every other stream, and so
    the batch order of every epoch, as it was, and a cell draws the same numbers alone or in a stack.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train_xy: tuple[torch.Tensor, torch.Tensor],
        val_xy: tuple[torch.Tensor, torch.Tensor],
        *,
        config: Train,
        epochs: int,
        augmenters: list[Any],
        regularizers: list[Any],
        seed: int,
        num_classes: int,
        deadline: float | None = None,
        fast: tuple[bool, bool] | None = None,
        host: Any = None,
    ) -> None:
        self.x_all, self.y_all = train_xy
        self.val_xy = val_xy
        self.device = device = self.x_all.device
        self.config, self.num_classes, self.deadline = config, num_classes, deadline
        self.use_amp, self.channels_last = fast or fast_path(config, device)  # (bf16 autocast, channels-last)
        self.augmenters, self.regularizers = augmenters, regularizers
        self.shuffle = stream(device, seed, "shuffle")
        self.augment_streams = [stream(device, seed, "augmenter", i) for i in range(len(augmenters))]
        self.regularizer_streams = [stream(device, seed, "regularizer", i) for i in range(len(regularizers))]
        self.dropout = stream(device, seed, "model")
        # a stacked model's dropout draws from a counter-based stream keyed by this (``GroupedModel.uniform``)
        self.dropout_key = int(np.random.SeedSequence([seed, STREAMS.index("model"), 1]).generate_state(1)[0])
        self.global_seed = int(np.random.SeedSequence([seed, STREAMS.index("model")]).generate_state(1)[0])
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model
        self.forward = compiled(self.model, config.compile) if config.compile else self.model

        options, changed_by = optimizer_options(config, regularizers)
        origin = {key: f"regularizer '{name}'" for key, name in changed_by.items()}
        self.optimizer_technique = optimizer_technique(options, host, origin)
        self.optimizer = make_optimizer(self.model, options, device, technique=self.optimizer_technique)
        class_counts = np.bincount(self.y_all.cpu().numpy(), minlength=num_classes)  # CUDA's is not deterministic
        loss_options: dict[str, Any] = {"function": F.cross_entropy, "weight": None, "label_smoothing": 0.0}
        for reg in regularizers:
            loss_options = reg.configure_loss(loss_options, class_counts)
        self.loss_fn = loss_options.pop("function")
        if loss_options["weight"] is not None:
            loss_options["weight"] = torch.as_tensor(loss_options["weight"], dtype=torch.float32, device=device)
        self.loss_options = loss_options
        self.step_hooks = [reg for reg in regularizers if type(reg).after_step is not Regularizer.after_step]
        self.gradient_hooks = [reg for reg in regularizers if type(reg).before_step is not Regularizer.before_step]
        batch_hooks = [reg for reg in regularizers if type(reg).on_batch is not Regularizer.on_batch]
        #: plugins that see each batch of this cell on their own (a stack runs them member by member)
        self.batch_hooks = [*augmenters, *batch_hooks]
        self.plain_loss = self.loss_fn is F.cross_entropy
        self.epochs = epochs
        for reg in regularizers:
            reg.epoch, reg.epochs = 0, epochs
        span = (0.0, 1.0) if self.x_all.dtype == torch.uint8 else (float(self.x_all.min()), float(self.x_all.max()))
        for augmenter in augmenters:
            augmenter.value_range = span
        #: what a stack's members must share to augment their batches as one (None: this one augments alone)
        self.augment_key = (
            tuple((type(a), a.params.model_dump_json(), tuple(a.value_range)) for a in augmenters)
            if augmenters and len(self.batch_hooks) == len(augmenters) and all(type(a).stacks() for a in augmenters)
            else None
        )

        self.n, self.batch = len(self.y_all), config.batch_size
        # a trailing batch of one sample would break batch norm; it is skipped (the order is reshuffled each epoch)
        self.steps = self.n // self.batch + (1 if self.n % self.batch > 1 else 0)
        self.schedulers = [
            s for s in (reg.make_scheduler(self.optimizer, epochs, self.steps) for reg in regularizers) if s is not None
        ]
        self.batch_schedulers = [s for s in self.schedulers if hasattr(s, "step_batch")]
        self.result = TrainResult()
        self.epoch_times: list[float] = []
        self.error: BaseException | None = None
        self.detail = ""
        self.running = True
        #: what of this cell's step ran member by member in its stack (a plugin's own hook), and why
        self.per_member: list[str] = []

    @property
    def seen(self) -> int:
        return min(self.n, self.steps * self.batch)

    def fail(self, error: BaseException) -> None:
        """This cell fails; the others in its stack go on."""
        self.error, self.detail, self.running = error, traceback.format_exc(), False

    def begin_epoch(self, epoch: int) -> None:
        for reg in self.regularizers:
            reg.epoch = epoch
        self.model.train()
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)
        self.order = torch.randperm(self.n, generator=self.shuffle, device=self.device)

    def check_time(self, epoch: int) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise CellFailed(f"the cell ran past train.timeout in epoch {epoch + 1}; raise the limit or train less")

    def next_batch(self, epoch: int, step: int) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """(images, targets, labels) of this step, augmented and passed through ``on_batch``."""
        self.check_time(epoch)
        index = self.order[step * self.batch : (step + 1) * self.batch]
        y = self.y_all[index]
        return (*self.transform(as_float(self.x_all[index], self.channels_last), y), y)

    def transform(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(images, targets) of a batch after the augmenters and the regularizers' ``on_batch``."""
        for augmenter, generator in zip(self.augmenters, self.augment_streams, strict=True):
            x = augmenter(x, generator)
        targets = y
        for reg, generator in zip(self.regularizers, self.regularizer_streams, strict=True):
            x, targets = reg.on_batch(x, targets, generator)
        return x, targets

    def loss(self, logits: torch.Tensor, targets: Any, first: bool) -> torch.Tensor:
        if first and tuple(logits.shape) != (len(logits), self.num_classes):
            raise CellFailed(
                f"the model must map a batch of {len(logits)} images to ({len(logits)}, {self.num_classes}) logits, "
                f"one per class; it returned shape {tuple(logits.shape)}"
            )
        return self.loss_fn(logits.float(), targets, **self.loss_options)

    def after_backward(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.before_step()
        self.optimizer.step()
        self.after_step()
        self.loss_sum += loss.detach() * len(y)
        self.correct += (logits.detach().argmax(1) == y).sum()

    def before_step(self) -> None:
        for reg in self.gradient_hooks:
            reg.before_step(self.model)

    def after_step(self) -> None:
        for scheduler in self.batch_schedulers:
            scheduler.step_batch()
        for reg in self.step_hooks:
            reg.after_step(self.model)

    def end_epoch(self, epoch: int, seconds: float, on_epoch: Any, sums: tuple[Any, Any] | None = None) -> None:
        """The epoch's logs, hooks and early stop. ``sums`` (loss, correct predictions) are a stack's for this
        member, which the stack keeps itself; alone, the learner's own."""
        loss_sum, correct = sums if sums is not None else (self.loss_sum, self.correct)
        self.epoch_times.append(seconds)
        train_loss = float(loss_sum) / self.seen
        if not np.isfinite(train_loss):
            raise CellFailed(f"training loss became {train_loss} in epoch {epoch + 1}; lower the learning rate")
        start = clock(self.device)
        val_loss, val_acc = evaluate_loss(
            self.model, self.val_xy, eval_batch_size(self.config, self.device), self.use_amp, self.channels_last
        )
        self.result.validate_seconds += clock(self.device) - start
        logs = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_acc": float(correct) / self.seen,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": seconds,
        }
        self.result.history.append(logs)
        for scheduler in self.schedulers:
            if hasattr(scheduler, "step_epoch"):
                scheduler.step_epoch(logs)
        stop = [reg.on_epoch_end(epoch, logs, self.model) for reg in self.regularizers]
        if on_epoch:
            on_epoch(logs)
        if any(stop):
            self.finish()

    def finish(self) -> None:
        """After the last epoch (or an early stop): ``on_train_end`` hooks, then the throughput figures."""
        self.running = False
        for reg in self.regularizers:
            reg.on_train_end(self.model)
        result, times = self.result, self.epoch_times
        result.epochs_run = len(times)
        result.train_seconds = sum(times)
        # throughput from the epochs after the first (warm) when there are any
        timed = times[1:] or times
        result.warm = len(times) > 1
        result.images_per_s = self.seen * len(timed) / max(sum(timed), 1e-9)


def alone_because(learner: Learner) -> str | None:
    """Why this learner cannot be stacked with any other, or None."""
    if learner.config.compile:
        return "train.compile compiles each model on its own"
    why = unstackable(learner.model)
    return f"the model cannot be stacked: {why}" if why else None


@dataclass(frozen=True)
class Group:
    """Learners that train as one stack (``train_stack``); one that trains alone says why in ``alone_because``
    ('' when it merely has no partner)."""

    learners: list[Learner]
    alone_because: str = ""


def stack_groups(learners: list[Learner]) -> list[Group]:
    """The one answer to "which learners train together, and if not, why": learners that share a device, a
    precision, a memory format, a batch size, an image shape and an architecture form a group when a probe of their
    grouped computation agrees with each model alone; the rest train alone, each with the reason. Groups keep the
    order of their first learner."""
    keyed: dict[Any, list[Learner]] = {}
    reasons: dict[Any, str] = {}
    for learner in learners:
        why = alone_because(learner)
        key = id(learner) if why else (learner.device, learner.use_amp, learner.channels_last, learner.batch,
                                       tuple(learner.x_all.shape[1:]), signature(learner.model))  # fmt: skip
        keyed.setdefault(key, []).append(learner)
        reasons[key] = why if why and len(learners) > 1 else ""  # asked to train alone, it needs no reason
    groups = []
    for key, members in keyed.items():
        if len(members) > 1:
            first = members[0]
            why = probe([learner.model for learner in members], tuple(first.x_all.shape[1:]), first.device)
            if why is not None:  # one after the other, each exactly as it would train alone
                groups += [Group([learner], why) for learner in members]
                continue
        groups.append(Group(members, reasons[key]))
    return groups


def train_stack(learners: list[Learner], *, epochs: int | None = None, on_epoch: Any = None) -> None:
    """Train one group of ``stack_groups`` as one grouped computation (``octbench.cell.stack_train``), each
    learner for its own ``Learner.epochs`` (a search may have chosen them per cell), at most ``epochs``, or until
    its early stop; a stack of one trains as it would in a stack, and a model that cannot be stacked trains alone.
    A learner whose plugin fails, whose loss turns NaN or whose time runs out fails alone (``Learner.error``); the
    rest go on."""
    if len(learners) == 1 and alone_because(learners[0]) is not None:
        _train_alone(learners[0], epochs, on_epoch)
        return
    if len(learners) > 1 and any(alone_because(learner) is not None for learner in learners):
        raise ValueError("train_stack takes one group of stack_groups: these learners cannot share a stack")
    Stack(learners).train(epochs, on_epoch)


def _train_alone(learner: Learner, epochs: int | None, on_epoch: Any) -> None:
    """A model that cannot be stacked, step by step; its dropout draws from torch's global generator, seeded per
    cell."""
    torch.manual_seed(learner.global_seed)
    for epoch in range(learner.epochs if epochs is None else min(epochs, learner.epochs)):
        if not learner.running:
            break
        guard(learner, learner.begin_epoch, epoch)
        start = clock(learner.device)
        for step in range(learner.steps):
            if not learner.running:
                break
            guard(learner, _step_alone, learner, epoch, step)
        seconds = clock(learner.device) - start
        if learner.running:
            guard(learner, learner.end_epoch, epoch, seconds, on_epoch)
    if learner.running:
        guard(learner, learner.finish)


def alone_images_per_s(learner: Learner, seconds: float) -> float:
    """Training images per second of a model that trains alone, timed for about ``seconds`` after two warm-up
    steps on its first batch (the precision trial, ``octbench.cell.machine``); the learner trains, so give it a copy."""
    learner.begin_epoch(0)
    for _ in range(2):
        _step_alone(learner, 0, 0)
    steps, start = 0, clock(learner.device)
    while clock(learner.device) - start < seconds:
        _step_alone(learner, 0, 0)
        steps += 1
    return steps * learner.batch / (clock(learner.device) - start)


def _step_alone(learner: Learner, epoch: int, step: int) -> None:
    x, targets, y = learner.next_batch(epoch, step)
    with autocast(learner.device, learner.use_amp):
        logits = learner.forward(x)
        loss = learner.loss(logits, targets, first=epoch == 0 and step == 0)
    learner.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    learner.after_backward(loss, logits, y)


STREAMS = ("shuffle", "augmenter", "regularizer", "model")


def stream(device: torch.device, seed: int, name: str, index: int = 0) -> torch.Generator:
    """A generator on ``device`` for one named stream of a cell, independent of every other stream."""
    state = np.random.SeedSequence([seed, STREAMS.index(name), index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & (2**63 - 1))


def compiled(model: torch.nn.Module, mode: bool | str = True) -> torch.nn.Module:
    """torch.compile in ``mode`` (``True``: its default), with its cache under octbench's cache folder, not /tmp."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
    return torch.compile(model, mode=None if mode in (True, "default") else mode)
