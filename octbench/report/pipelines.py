"""What each variant's pipeline does to an image: the same fixed training images raw, after each preprocessor in
order, and as a few draws of its augmenters, so a reader can tell a technique that failed from one misconfigured.

Drawn at report time with the variant's own techniques (its plugins, its parameters). A stateless step transforms the
images as the run did; a step that learns from data is named without a picture, and so is every step after it (a
cell fits it on its own fold's training part, which the report does not have); a resampler changes which images a
cell trains on, not any image, and is named without a picture.
Float images (a standardising step) are shown scaled to their own range. Only the techniques of a variant with a
finished cell run here (they ran to the end on the whole dataset), each variant's within ``SECONDS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from octbench.plugins import PluginHost
from octbench.technique import Resampler, Splits

IMAGES = 4  # fixed training images shown, one per class first
DRAWS = 3  # augmentation draws of each
RESAMPLES = "resamples the training part (adds or drops images); no image changes"
FITTED = "learns from each fold's training part: it and the steps after it are not drawn here"
SECONDS = 60  # a variant's strip is drawn within this, or the page says it could not be


@dataclass
class Stage:
    """One row of a variant's strip: what was done, the images after it, and a note (a resampler, a fitted step)."""

    label: str
    images: list[np.ndarray] = field(default_factory=list)
    note: str = ""
    span: tuple[float, float] | None = None  # the value range to show floats in (None: each image its own)
    augmented: bool = False


def rows(labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """The strip's images: one random training image of each class (seeded), then more till ``IMAGES``."""
    rng = np.random.default_rng(seed)
    chosen = [int(rng.choice(np.flatnonzero(labels == c))) for c in range(num_classes) if np.any(labels == c)]
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    extra = rng.choice(rest, size=max(0, min(IMAGES - len(chosen), len(rest))), replace=False).tolist()
    return np.array((chosen + extra)[:IMAGES], dtype=np.int64)


def stages(spec: dict[str, Any], host: PluginHost, data: Splits, shown: np.ndarray, seed: int) -> list[Stage]:
    """The strip of one variant (its stored spec): raw, each preprocessor, then ``DRAWS`` augmentation draws.

    Nothing is fitted here: a step that learns from data learns from each fold's training part, which the report
    does not have, so it and every step after it are named without a picture (fitting it here on other images
    would show something no cell did, and would put images outside a fold's training part through a fit)."""
    images = data.train_images[shown]
    found = [Stage("raw", list(images))]
    for ref, step in _steps(spec, host):
        if isinstance(step, Resampler):
            found.append(Stage(_label(ref), note=RESAMPLES))
            continue
        if not getattr(step, "stateless", False):
            found.append(Stage(_label(ref), note=FITTED))
            return found
        images = step.transform(images)
        found.append(Stage(_label(ref), list(images)))
    augmenters = [host.create("augmenter", r["name"], r.get("params", {})) for r in spec.get("augmenters", [])]
    if augmenters:
        batch = torch.as_tensor(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        span = (0.0, 1.0) if batch.dtype == torch.uint8 else (float(images.min()), float(images.max()))
        batch = batch.float().div(255) if batch.dtype == torch.uint8 else batch.float()
        generator = torch.Generator().manual_seed(seed)
        names = " + ".join(_label(r) for r in spec["augmenters"])
        for draw in range(DRAWS):
            x = batch.clone()
            for augmenter in augmenters:
                augmenter.value_range = span
                x = augmenter(x, generator)
            drawn = list(x.clamp(*span).permute(0, 2, 3, 1).numpy())
            found.append(Stage(f"{names}, draw {draw + 1}", drawn, span=span, augmented=True))
    return found


def model_view(spec: dict[str, Any], host: PluginHost, images: np.ndarray) -> tuple[np.ndarray, str]:
    """``images`` as the variant's model takes them (padded, resized, filtered), as far as the report can show them:
    its stateless preprocessors in order, up to the first that learns from data (fitted per fold, which the report
    does not do); and '' or which step the images come before."""
    for ref, step in _steps(spec, host):
        if isinstance(step, Resampler):
            continue
        if not getattr(step, "stateless", False):
            return images, f"before {_label(ref)}, which is fitted per fold"
        images = step.transform(images)
    return images, ""


def _steps(spec: dict[str, Any], host: PluginHost) -> list[tuple[dict[str, Any], Any]]:
    return [
        (ref, host.create("preprocessor", ref["name"], ref.get("params", {}))) for ref in spec.get("preprocessors", [])
    ]


def displayable(image: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """(H, W, C) uint8 for a PNG: uint8 as is, floats scaled from [low, high] (their own range by default)."""
    if image.dtype == np.uint8:
        return image
    low = float(np.min(image)) if low is None else low
    high = float(np.max(image)) if high is None else high
    scaled = (np.asarray(image, np.float64) - low) / max(high - low, 1e-12)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)


def _label(ref: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={v}" for k, v in (ref.get("params") or {}).items())
    return f"{ref['name']}({params})" if params else ref["name"]
