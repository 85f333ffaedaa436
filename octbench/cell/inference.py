"""Inference: logits for evaluation and scoring, in batches, float32 at the head, timed warm."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from octbench.cell.device import as_float, autocast, clock
from octbench.suite import Train


class AveragedViews(torch.nn.Module):
    """A trained model evaluated on the views its regularizers give of each batch (``Regularizer.test_views``), the
    logits averaged: test-time augmentation. Used for the held-out fold and the test split only."""

    def __init__(self, model: torch.nn.Module, regularizers: list) -> None:
        super().__init__()
        self.model, self.regularizers = model, regularizers

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        views = [images]
        for regularizer in self.regularizers:
            views = [seen for view in views for seen in (regularizer.test_views(view) or [view])]
        return torch.stack([self.model(view) for view in views]).mean(0)


def with_test_views(model: torch.nn.Module, regularizers: list) -> torch.nn.Module:
    """``model``, or the model averaged over its regularizers' test views when any gives some."""
    viewing = [r for r in regularizers if type(r).augments_tests()]
    return AveragedViews(model, viewing) if viewing else model


def eval_batch_size(config: Train, device: torch.device) -> int:
    """The suite's choice, else what measured fastest: moderate batches stay in cache on a CPU, large ones fill a GPU
    (docs/benchmarks.md, section 9)."""
    return config.eval_batch_size or (4096 if device.type == "cuda" else 512)


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int,
    use_amp: bool,
    channels_last: bool,
    *,
    float32_out: bool = False,
) -> torch.Tensor | None:
    """Logits (N, classes), float32, on the device; under ``use_amp`` the forward pass runs in bf16.
    ``float32_out``: None as soon as a batch's output is not float32 (the caller then scores in float32)."""
    model.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        x = as_float(images[start : start + batch_size], channels_last)
        with autocast(images.device, use_amp):
            out = model(x)
        if float32_out and out.dtype != torch.float32:
            return None
        chunks.append(out.float())
    return torch.cat(chunks) if chunks else torch.empty(0, device=images.device)


@contextlib.contextmanager
def float32_head(model: torch.nn.Module) -> Iterator[bool]:
    """Runs the model's last linear layer in float32 (autocast off, float32 input and weights), so the logits it
    returns are float32 products rather than bf16-rounded ones. Yields whether the model has such a layer."""
    head = next((m for m in reversed(list(model.modules())) if isinstance(m, torch.nn.Linear)), None)
    if head is None:
        yield False
        return

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            bias = None if head.bias is None else head.bias.float()
            return F.linear(x.float(), head.weight.float(), bias)

    own = head.__dict__.get("forward")
    head.forward = forward
    try:
        yield True
    finally:
        if own is None:
            del head.forward
        else:
            head.forward = own


@torch.inference_mode()
def scoring_logits(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int, use_amp: bool, channels_last: bool
) -> torch.Tensor:
    """The logits every stored metric comes from: float32 at the head even when the body runs in bf16.

    bf16 logits carry 8 bits of mantissa, which tied up to 43% of one cell's test images at the same score. The
    body keeps the training precision (float32 throughout cost 2x the inference time on a bf16 CPU), the last linear
    layer runs in float32; a model whose output does not come from that layer in float32 runs wholly in float32.
    """
    if use_amp and len(images):
        with float32_head(model) as found:
            # decided on the first batch itself, not on an extra probe: a regularizer's test views see each batch once
            logits = predict_logits(model, images, batch_size, True, channels_last, float32_out=True) if found else None
        if logits is not None:
            return logits
    return predict_logits(model, images, batch_size, False, channels_last)


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
    model: torch.nn.Module, images: torch.Tensor, batch_size: int, use_amp: bool, channels_last: bool
) -> tuple[np.ndarray, float]:
    """``scoring_logits`` as float32 numpy, and warm inference images/s (one warm-up batch, device synchronised)."""
    device = images.device
    scoring_logits(model, images[:batch_size], batch_size, use_amp, channels_last)
    start = clock(device)
    logits = scoring_logits(model, images, batch_size, use_amp, channels_last)
    seconds = clock(device) - start
    return logits.cpu().numpy(), len(images) / max(seconds, 1e-9)
