"""One cell: (suite, variant, seed, fold) in, one result record out.

A cell is a pure function of its task: it builds fresh techniques, fits them on the fold's inner training part
only, trains, and evaluates on the held-out fold and the official test split. Nothing here touches the store,
so another executor can run cells in another process or on another machine.
"""

from __future__ import annotations

import hashlib
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from octbench import cache, folds, validate
from octbench.device import describe, deterministic_algorithms, resolve
from octbench.errors import CellFailed, Interrupted, OctbenchError
from octbench.metrics import evaluate
from octbench.plugins import PluginHost
from octbench.suite import QUICK_EPOCHS, QUICK_POOL, Suite, Variant
from octbench.technique import Resampler, Splits
from octbench.train import eval_batch_size, fast_path, timed_predict, to_device, train
from octbench.validate import frozen


@dataclass(frozen=True)
class CellTask:
    suite: Suite
    variant: Variant
    seed: int
    fold: int
    config_hash: str
    device: str
    data_dir: str | None = None
    quick: bool = False
    plugin_paths: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.variant.name, self.seed, self.fold)

    @property
    def cell_seed(self) -> int:
        """Seeds model initialisation, shuffling, augmentation and resampling: the same for every variant."""
        return self.seed * 1_000 + self.fold


@dataclass
class CellResult:
    variant: str
    seed: int
    fold: int
    config_hash: str
    status: str = "done"
    error: str = ""
    detail: str = ""
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)
    predictions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    device: str = ""


_DATA: dict[tuple[str, str, str | None], Splits] = {}


def load_data(suite: Suite, host: PluginHost, data_dir: str | None, progress: bool = False) -> Splits:
    """The suite's dataset, loaded once per process, checked, and read-only from then on."""
    ref = suite.dataset
    key = (ref.name or "", repr(sorted(ref.params.items())), data_dir)
    if key not in _DATA:
        dataset = host.create("dataset", ref.name, ref.params)
        try:
            splits = dataset.load(data_dir, progress=progress)
        except OctbenchError:
            raise
        except Exception as exc:  # a dataset plugin's own failure is still the user's input problem
            raise OctbenchError(f"dataset '{ref.name}' failed to load: {type(exc).__name__}: {exc}") from None
        if not isinstance(splits, Splits):
            raise OctbenchError(f"dataset '{ref.name}': load() must return octbench.technique.Splits.")
        validate.check_splits(splits, ref.name)
        for name in ("train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels"):
            setattr(splits, name, frozen(getattr(splits, name)))
        for array in splits.pool:
            frozen(array)
        _DATA[key] = splits
    return _DATA[key]


def execute(task: CellTask, host: PluginHost | None = None, on_epoch: Any = None) -> CellResult:
    """Run a cell; any failure inside it becomes a failed result with its reason, never an exception. Only an
    interruption of the whole run (Ctrl-C, SIGTERM) passes through; a plugin's ``sys.exit`` fails its cell."""
    try:
        return run_cell(task, host, on_epoch=on_epoch)
    except (KeyboardInterrupt, Interrupted):
        raise
    except SystemExit as exc:
        return failed_result(task, f"a plugin called sys.exit({exc.code!r}) inside the cell", traceback.format_exc())
    except CellFailed as exc:
        return failed_result(task, str(exc), traceback.format_exc())
    except torch.cuda.OutOfMemoryError as exc:
        return failed_result(task, f"out of memory: {exc}".splitlines()[0], traceback.format_exc())
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ValueError) and "read-only" in str(exc):
            reason += " (octbench hands plugins read-only arrays: copy one before writing into it)"
        return failed_result(task, reason, traceback.format_exc())


def failed_result(task: CellTask, reason: str, detail: str = "") -> CellResult:
    return CellResult(*task.key, task.config_hash, status="failed", error=reason, detail=detail)


def run_cell(task: CellTask, host: PluginHost | None = None, on_epoch: Any = None) -> CellResult:
    host = host or PluginHost.load(task.plugin_paths)
    suite, variant, timings = task.suite, task.variant, {}
    deadline = time.monotonic() + suite.train.timeout if suite.train.timeout else None

    start = time.perf_counter()
    data = load_data(suite, host, task.data_dir)
    pool_x, pool_y = data.pool
    pool_index = np.arange(len(pool_y))
    if task.quick:
        pool_index = folds.quick_subset(pool_y, QUICK_POOL, task.seed)
        pool_x, pool_y = pool_x[pool_index], pool_y[pool_index]
    train_idx, held_idx = folds.fold_indices(pool_y, suite.cv.folds, task.seed, task.fold)
    inner_idx, val_idx = folds.inner_split(train_idx, pool_y, suite.cv.val_fraction, task.seed, task.fold)
    timings["load"] = time.perf_counter() - start

    steps = [host.create("preprocessor", r.name, r.params) for r in variant.preprocessors]
    lead = next((i for i, step in enumerate(steps) if not _stateless(step)), len(steps))
    subset = ["quick", QUICK_POOL, task.seed] if task.quick else "full"
    # what the data is: the dataset plugin, its parameters and its files' checksum, and the subset of it
    identity = [suite.dataset.name, suite.dataset.params, data.md5, subset]
    start = time.perf_counter()
    pool_x, test_x, cached = transform_whole(
        steps[:lead], variant.preprocessors[:lead], pool_x, data.test_images, identity
    )
    timings["preprocess"] = time.perf_counter() - start
    timings["preprocess_cached"] = float(cached)

    parts = {
        "train": (frozen(pool_x[inner_idx]), frozen(pool_y[inner_idx])),
        "inner_val": (frozen(pool_x[val_idx]), pool_y[val_idx]),
        "heldout": (frozen(pool_x[held_idx]), pool_y[held_idx]),
    }
    if suite.cv.test_split:
        parts["test"] = (test_x, data.test_labels)
    counts = {name: len(y) for name, (_, y) in parts.items()}

    context = [
        *identity,
        hashlib.sha1(inner_idx.tobytes()).hexdigest(),
        _refs(variant.preprocessors[:lead], steps[:lead]),
    ]
    parts, prep_timings = apply_preprocessors(
        steps[lead:], variant.preprocessors[lead:], parts, task.cell_seed, context, data.num_classes
    )
    timings["preprocess"] += prep_timings.pop("preprocess")
    timings.update(prep_timings)
    counts["train_after_resampling"] = len(parts["train"][1])

    device = resolve(task.device)
    deterministic_algorithms(suite.train.deterministic)
    torch.manual_seed(task.cell_seed)
    model_spec = host.create("model", variant.model.name, variant.model.params)
    model = model_spec.build(data.channels, data.num_classes, int(parts["train"][0].shape[1])).to(device)
    augmenters = [host.create("augmenter", r.name, r.params) for r in variant.augmenters]
    regularizers = [host.create("regularizer", r.name, r.params) for r in variant.regularizers]
    for reg in regularizers:
        model = reg.configure_model(model)

    start = time.perf_counter()
    on_device = {name: to_device(x, y, device) for name, (x, y) in parts.items()}
    timings["to_device"] = time.perf_counter() - start
    epochs = min(suite.train.epochs, QUICK_EPOCHS) if task.quick else suite.train.epochs
    outcome = train(
        model,
        on_device["train"],
        on_device["inner_val"],
        config=suite.train,
        epochs=epochs,
        augmenters=augmenters,
        regularizers=regularizers,
        seed=task.cell_seed,
        num_classes=data.num_classes,
        on_epoch=on_epoch,
        deadline=deadline,
    )
    timings["train"] = outcome.train_seconds
    timings["validate"] = outcome.validate_seconds
    timings["train_images_per_s"] = outcome.images_per_s
    timings["train_warm"] = float(outcome.warm)

    result = CellResult(*task.key, task.config_hash, history=outcome.history, counts=counts, device=describe(device))
    start = time.perf_counter()
    _, channels_last = fast_path(suite.train, device)
    evaluated = {"heldout": pool_index[held_idx], "test": np.arange(counts.get("test", 0))}
    for split in ("heldout", "test"):
        if split not in on_device:
            continue
        x, _y = on_device[split]
        logits, speed = timed_predict(model, x, eval_batch_size(suite.train, device), channels_last)
        validate.check_logits(logits, len(x), data.num_classes, variant.model.name)
        y_true = parts[split][1]
        result.evaluations[split] = evaluate(y_true, logits, data.num_classes)
        result.predictions[split] = {"indices": evaluated[split], "y_true": y_true, "logits": logits}
        if split == "heldout":
            timings["infer_images_per_s"] = speed
    timings["evaluate"] = time.perf_counter() - start
    result.timings = timings
    return result


def _stateless(step: Any) -> bool:
    return not isinstance(step, Resampler) and getattr(step, "stateless", False)


def _refs(refs: list[Any], steps: list[Any]) -> list[Any]:
    return [[r.name, r.params, cache.source_hash(type(s))] for r, s in zip(refs, steps, strict=True)]


def transform_whole(
    steps: list[Any], refs: list[Any], pool: np.ndarray, test: np.ndarray, context: list[Any]
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Apply stateless steps (each image on its own, nothing fitted) to the whole pool and test split once,
    through the cache: every cell of every variant with the same leading steps reuses the result."""
    if not steps:
        return pool, test, False
    entry = cache.key("stateless", context, _refs(refs, steps))
    hit = cache.get("preprocessed", entry)
    if hit is not None:
        return hit["pool"], hit["test"], True
    for step, ref in zip(steps, refs, strict=True):
        pool = frozen(validate.check_transformed(step.transform(pool), pool, ref.name))
        test = frozen(validate.check_transformed(step.transform(test), test, ref.name))
    cache.put("preprocessed", entry, {"pool": pool, "test": test})
    return pool, test, False


def apply_preprocessors(
    steps: list[Any],
    refs: list[Any],
    parts: dict[str, tuple[np.ndarray, np.ndarray]],
    seed: int,
    context: list[Any],
    num_classes: int,
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
            entry = cache.key("resample", context, _refs(refs[: index + 1], steps[: index + 1]), seed)
            hit = cache.get("resampled", entry)
            if hit is None:
                out = step.fit_resample(*parts["train"], random_state=seed)
                x, y = validate.check_resampled(out, parts["train"][0], num_classes, ref.name)
                cache.put("resampled", entry, {"x": x, "y": y})
            else:
                x, y = hit["x"], hit["y"]
                timings["resample_cached"] = 1.0
            parts = {**parts, "train": (frozen(x), frozen(y))}
            timings["resample"] += time.perf_counter() - start
            continue
        if not getattr(step, "stateless", False):
            step.fit(*parts["train"])
        parts = {
            name: (frozen(validate.check_transformed(step.transform(x), x, ref.name)), y)
            for name, (x, y) in parts.items()
        }
        timings["preprocess"] += time.perf_counter() - start
    return parts, timings
