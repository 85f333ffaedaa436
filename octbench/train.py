"""Training and inference with the data resident on the compute device.

Images travel to the device once per cell, as stored (uint8 stays uint8), and each batch is gathered, scaled
and augmented there as one tensor: no data-loader workers, no per-sample Python in the hot loop. The host reads
the device once per epoch (loss, accuracy, the NaN check) and never inside a step.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from octbench.data.files import cache_dir
from octbench.device import clock
from octbench.errors import CellFailed
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


def as_float(batch: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = batch.float().div_(255) if batch.dtype == torch.uint8 else batch.float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


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
    """(bf16 autocast, channels-last). Measured for the seed CNN, batch 64, on 2 AVX512-BF16 CPU cores: fp32
    1.7k images/s, channels-last 2.5k, bf16 2.8k, both 4.4k; torch.compile 2.0k after 27 s of compiling."""
    return config.amp and bf16_native(device), device.type in ("cpu", "cuda")


def autocast(device: torch.device, enabled: bool):
    if enabled:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def eval_batch_size(config: Train, device: torch.device) -> int:
    """The suite's choice, else what measured fastest: moderate batches stay in cache on a CPU (seed CNN, 2 cores,
    bf16 and channels-last: 10.2k images/s at 512, 7.2k at 4096), large ones fill a GPU."""
    return config.eval_batch_size or (4096 if device.type == "cuda" else 512)


def make_optimizer(model: torch.nn.Module, options: dict[str, Any], device: torch.device) -> torch.optim.Optimizer:
    name, lr, decay = options["name"], options["lr"], options.get("weight_decay", 0.0)
    fused = {"fused": True} if device.type == "cuda" else {}
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=decay, **fused)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay, **fused)
    if name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, weight_decay=decay, momentum=options["momentum"], nesterov=options["nesterov"]
        )
    raise ValueError(f"unknown optimizer {name!r}")


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
) -> TrainResult:
    """Train ``model`` on ``train_xy``; ``val_xy`` (the inner validation split) only steers stopping and schedules.

    ``seed`` seeds independent random streams (``stream``): the batch order, each augmenter and each regularizer
    draw from their own, so adding a technique that draws random numbers leaves every other stream, and so the
    batch order of every epoch, as it was. Past ``deadline`` (a ``time.monotonic()`` reading) the cell fails.
    """
    x_all, y_all = train_xy
    device = x_all.device
    shuffle = stream(device, seed, "shuffle")
    augment_streams = [stream(device, seed, "augmenter", i) for i in range(len(augmenters))]
    regularizer_streams = [stream(device, seed, "regularizer", i) for i in range(len(regularizers))]
    use_amp, channels_last = fast_path(config, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = compiled(model, config.compile) if config.compile else model

    options: dict[str, Any] = config.optimizer.model_dump()
    for reg in regularizers:
        options = reg.configure_optimizer(options)
    optimizer = make_optimizer(model, options, device)
    class_counts = np.bincount(y_all.cpu().numpy(), minlength=num_classes)  # CUDA's bincount is not deterministic
    loss_options: dict[str, Any] = {"function": F.cross_entropy, "weight": None, "label_smoothing": 0.0}
    for reg in regularizers:
        loss_options = reg.configure_loss(loss_options, class_counts)
    loss_fn = loss_options.pop("function")
    if loss_options["weight"] is not None:
        loss_options["weight"] = torch.as_tensor(loss_options["weight"], dtype=torch.float32, device=device)
    step_hooks = [reg for reg in regularizers if type(reg).after_step is not Regularizer.after_step]

    n, batch = len(y_all), config.batch_size
    # a trailing batch of one sample would break batch norm; it is skipped (the order is reshuffled each epoch)
    steps = n // batch + (1 if n % batch > 1 else 0)
    schedulers = [s for s in (reg.make_scheduler(optimizer, epochs, steps) for reg in regularizers) if s is not None]
    batch_schedulers = [s for s in schedulers if hasattr(s, "step_batch")]

    result = TrainResult()
    epoch_times: list[float] = []
    for epoch in range(epochs):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        order = torch.randperm(n, generator=shuffle, device=device)
        start = clock(device)
        for step in range(steps):
            if deadline is not None and time.monotonic() > deadline:
                raise CellFailed(f"the cell ran past train.timeout in epoch {epoch + 1}; raise the limit or train less")
            index = order[step * batch : (step + 1) * batch]
            x, y = as_float(x_all[index], channels_last), y_all[index]
            for augmenter, generator in zip(augmenters, augment_streams, strict=True):
                x = augmenter(x, generator)
            targets = y
            for reg, generator in zip(regularizers, regularizer_streams, strict=True):
                x, targets = reg.on_batch(x, targets, generator)
            with autocast(device, use_amp):
                logits = forward(x)
                if epoch == 0 and step == 0 and tuple(logits.shape) != (len(index), num_classes):
                    raise CellFailed(
                        f"the model must map a batch of {len(index)} images to ({len(index)}, {num_classes}) logits, "
                        f"one per class; it returned shape {tuple(logits.shape)}"
                    )
                loss = loss_fn(logits.float(), targets, **loss_options)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for scheduler in batch_schedulers:
                scheduler.step_batch()
            for reg in step_hooks:
                reg.after_step(model)
            loss_sum += loss.detach() * len(index)
            correct += (logits.detach().argmax(1) == y).sum()
        epoch_times.append(clock(device) - start)

        seen = min(n, steps * batch)
        train_loss = float(loss_sum) / seen
        if not np.isfinite(train_loss):
            raise CellFailed(f"training loss became {train_loss} in epoch {epoch + 1}; lower the learning rate")
        start = clock(device)
        val_loss, val_acc = evaluate_loss(model, val_xy, eval_batch_size(config, device), use_amp, channels_last)
        result.validate_seconds += clock(device) - start
        logs = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_acc": float(correct) / seen,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": epoch_times[-1],
        }
        result.history.append(logs)
        for scheduler in schedulers:
            if hasattr(scheduler, "step_epoch"):
                scheduler.step_epoch(logs)
        stop = [reg.on_epoch_end(epoch, logs, model) for reg in regularizers]
        if on_epoch:
            on_epoch(logs)
        if any(stop):
            break
    for reg in regularizers:
        reg.on_train_end(model)

    seen = min(n, steps * batch)
    result.epochs_run = len(epoch_times)
    result.train_seconds = sum(epoch_times)
    # throughput from the epochs after the first (warm) when there are any
    timed = epoch_times[1:] or epoch_times
    result.warm = len(epoch_times) > 1
    result.images_per_s = seen * len(timed) / max(sum(timed), 1e-9)
    return result


STREAMS = ("shuffle", "augmenter", "regularizer")


def stream(device: torch.device, seed: int, name: str, index: int = 0) -> torch.Generator:
    """A generator on ``device`` for one named stream of a cell, independent of every other stream."""
    state = np.random.SeedSequence([seed, STREAMS.index(name), index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & (2**63 - 1))


def compiled(model: torch.nn.Module, mode: bool | str = True) -> torch.nn.Module:
    """torch.compile in ``mode`` (``True``: its default), with its cache under octbench's cache folder, not /tmp."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
    return torch.compile(model, mode=None if mode in (True, "default") else mode)


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int, use_amp: bool, channels_last: bool
) -> torch.Tensor:
    """Logits (N, classes), float32, on the device; under ``use_amp`` the forward pass runs in bf16."""
    model.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        x = as_float(images[start : start + batch_size], channels_last)
        with autocast(images.device, use_amp):
            chunks.append(model(x).float())
    return torch.cat(chunks) if chunks else torch.empty(0, device=images.device)


def evaluate_loss(
    model: torch.nn.Module, xy: tuple[torch.Tensor, torch.Tensor], batch_size: int, use_amp: bool, channels_last: bool
) -> tuple[float, float]:
    """Loss and accuracy on the inner validation split, which only steers training (stopping, plateaus): it runs in
    the training precision."""
    x, y = xy
    logits = predict_logits(model, x, batch_size, use_amp, channels_last)
    loss = F.cross_entropy(logits, y)
    acc = (logits.argmax(1) == y).float().mean()
    return float(loss), float(acc)


def timed_predict(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int, channels_last: bool
) -> tuple[np.ndarray, float]:
    """Logits as float32 numpy, computed in float32 whatever the training precision, and warm inference images/s
    (one warm-up batch, device synchronised).

    These are the scores every stored metric comes from. bf16 logits carry 8 bits of mantissa, which tied up to
    43% of one cell's test images; float32 costs about 2x the inference time on a bf16 CPU (seed CNN: 11k against
    5.5k images/s), about 1% of a cell."""
    device = images.device
    predict_logits(model, images[:batch_size], batch_size, False, channels_last)
    start = clock(device)
    logits = predict_logits(model, images, batch_size, False, channels_last)
    seconds = clock(device) - start
    return logits.cpu().numpy(), len(images) / max(seconds, 1e-9)
