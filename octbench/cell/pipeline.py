"""A cell's preprocessing: stateless steps over the whole dataset once (cached), then each step fitted on the
fold's training part only, resamplers changing the training part only (cached per exact training part)."""

from __future__ import annotations

import inspect
import time
from typing import Any

import numpy as np

from octbench.cell import cache, validate
from octbench.cell.validate import frozen
from octbench.technique import Resampler


def stateless_prefix(steps: list[Any]) -> int:
    """How many leading steps transform each image alone and learn nothing (so can run once for every cell)."""
    return next((i for i, step in enumerate(steps) if not _stateless(step)), len(steps))


def _stateless(step: Any) -> bool:
    return not isinstance(step, Resampler) and getattr(step, "stateless", False)


def fit(step: Any, images: np.ndarray, labels: np.ndarray, seed: int) -> None:
    """``step.fit`` on the training part, with the cell's seed as ``random_state`` when ``fit`` takes one (a
    preprocessor that samples, such as a PCA whitening on a random subset, is then reproducible per cell)."""
    parameters = inspect.signature(step.fit).parameters
    takes_seed = "random_state" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    if takes_seed:
        step.fit(images, labels, random_state=seed)
    else:
        step.fit(images, labels)


def refs_of(refs: list[Any], steps: list[Any]) -> list[Any]:
    return [[r.name, r.params, cache.source_hash(type(s))] for r, s in zip(refs, steps, strict=True)]


def transform(steps: list[Any], refs: list[Any], images: np.ndarray) -> np.ndarray:
    """``images`` through stateless steps, each checked (``octbench.cell.validate.check_transformed``)."""
    for step, ref in zip(steps, refs, strict=True):
        images = frozen(validate.check_transformed(step.transform(images), images, ref.name))
    return images


def transform_whole(
    steps: list[Any], refs: list[Any], pool: np.ndarray, test: np.ndarray, context: list[Any], *, use_cache: bool = True
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Apply stateless steps (each image on its own, nothing fitted) to the whole pool and test split once,
    through the cache: every cell of every variant with the same leading steps reuses the result."""
    if not steps:
        return pool, test, False
    entry = cache.key("stateless", context, refs_of(refs, steps))
    hit = cache.get("preprocessed", entry) if use_cache else None
    if hit is not None:
        return hit["pool"], hit["test"], True
    pool, test = transform(steps, refs, pool), transform(steps, refs, test)
    if use_cache:
        cache.put("preprocessed", entry, {"pool": pool, "test": test})
    return pool, test, False


def apply_preprocessors(
    steps: list[Any],
    refs: list[Any],
    parts: dict[str, tuple[np.ndarray, np.ndarray]],
    seed: int,
    context: list[Any],
    num_classes: int,
    *,
    use_cache: bool = True,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, float]]:
    """Fit each step on the training part only; resamplers change the training part only.

    ``parts['train']`` is the only data a step is fitted or resampled on; every other part is transformed with
    the already-fitted step. This is where the no-leakage invariant lives. Resampling results are cached under
    a key of ``context`` (data, subset, the exact training indices, earlier steps), the steps so far and the seed.
    """
    timings = {"preprocess": 0.0, "resample": 0.0, "resample_cached": 0.0}
    for index, (step, ref) in enumerate(zip(steps, refs, strict=True)):
        start = time.perf_counter()
        if isinstance(step, Resampler):
            entry = cache.key("resample", context, refs_of(refs[: index + 1], steps[: index + 1]), seed)
            hit = cache.get("resampled", entry) if use_cache else None
            if hit is None:
                out = step.fit_resample(*parts["train"], random_state=seed)
                x, y = validate.check_resampled(out, parts["train"][0], num_classes, ref.name)
                if use_cache:
                    cache.put("resampled", entry, {"x": x, "y": y})
            else:
                x, y = hit["x"], hit["y"]
                timings["resample_cached"] = 1.0
            parts = {**parts, "train": (frozen(x), frozen(y))}
            timings["resample"] += time.perf_counter() - start
            continue
        if not getattr(step, "stateless", False):
            fit(step, *parts["train"], seed)
        parts = {
            name: (frozen(validate.check_transformed(step.transform(x), x, ref.name)), y)
            for name, (x, y) in parts.items()
        }
        timings["preprocess"] += time.perf_counter() - start
    return parts, timings
