"""One cell: (suite, variant, seed, fold) in, one result record out.

A cell is a pure function of its task: it builds fresh techniques, fits them on the fold's inner training part
only, trains, and evaluates on the held-out fold and the official test split. Nothing here touches the store,
so another executor can run cells in another process or on another machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from octbench.cell import attribution, search, validate
from octbench.cell.deadline import TimeLimitExceeded, time_limit
from octbench.cell.device import describe, deterministic_algorithms, resolve
from octbench.cell.inference import eval_batch_size, scoring_logits, timed_predict, with_test_views
from octbench.cell.metrics import evaluate, higher_is_better
from octbench.cell.pipeline import apply_preprocessors, refs_of, stateless_prefix, transform, transform_whole
from octbench.cell.train import (
    Learner,
    fast_path,
    stack_groups,
    to_device,
    train_stack,
)
from octbench.cell.validate import frozen
from octbench.dataset import load_data
from octbench.errors import CellFailed, Interrupted
from octbench.plan import folds
from octbench.plugins import PluginHost
from octbench.suite import QUICK_POOL, Suite, Variant, dataset_of
from octbench.technique import Model, Splits


@dataclass(frozen=True)
class CellTask:
    suite: Suite
    variant: Variant
    seed: int
    fold: int
    config_hash: str
    device: str
    data_dir: str | None = None
    plugin_paths: tuple[str, ...] = ()
    precision: str = ""  # 'bf16' or 'fp32' as chosen for the run (octbench.cell.machine); '' lets the trainer decide
    journal: str = ""  # where a tuned cell's search study is kept (octbench.cell.search); '' keeps it in memory

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.variant.name, self.seed, self.fold)

    @property
    def quick(self) -> bool:
        return self.suite.quick

    @property
    def cell_seed(self) -> int:
        """Seeds model initialisation, shuffling, augmentation and resampling: the same for every variant."""
        return folds.cell_seed(self.seed, self.fold)


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
    settings: dict[str, Any] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)  # what the cell's techniques reported (cell_values)
    attributions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # split -> indices, maps


def execute(task: CellTask, host: PluginHost | None = None, on_epoch: Any = None) -> CellResult:
    """Run one cell: a stack of one."""
    return execute_stack([task], host, on_epoch)[0]


def execute_stack(tasks: list[CellTask], host: PluginHost | None = None, on_epoch: Any = None) -> list[CellResult]:
    """Run cells, training those whose models can be stacked as one computation (``octbench.cell.train.train_stack``).

    Any failure inside a cell becomes that cell's failed result with its reason, never an exception, and the
    other cells go on. Only an interruption of the whole run (Ctrl-C, SIGTERM) passes through; a plugin's
    ``sys.exit`` fails its cell. Each cell has its own ``train.timeout`` (``Clock``), enforced wherever it hangs
    (``octbench.cell.deadline``): its search, preparation and evaluation, and the stack's training, which it shares;
    never the time it waited while the stack's other cells searched. A cell past it fails with where it stopped.
    """
    host = host or PluginHost.load(tasks[0].plugin_paths)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # the stack's own peak, for the report's provenance
    clocks = [Clock(task.suite.train.timeout) for task in tasks]
    results: dict[int, CellResult] = {}
    prepared: dict[int, Prepared] = {}
    searches: dict[int, dict[str, Any]] = {}
    for i, task in enumerate(tasks):
        with clocks[i].own(task, results, i):
            if task.variant.tune is not None:
                task, searches[i] = tuned(task, host, on_epoch)
            prepared[i] = prepare(task, host)
    for group in stack_groups([p.learner for p in prepared.values()]):
        members = [next(i for i, p in prepared.items() if p.learner is learner) for learner in group.learners]
        start = time.perf_counter()
        train_together(group.learners, [clocks[i] for i in members], on_epoch)
        for i in members:
            p = prepared[i]
            p.timings["stack_size"] = float(len(group.learners))
            p.timings["stack_seconds"] = time.perf_counter() - start
            p.unstacked = group.alone_because
    for i, p in prepared.items():
        if p.learner.error is not None:
            results[i] = failure(p.task, p.learner.error, p.learner.detail)
            continue
        with clocks[i].own(p.task, results, i):
            results[i] = evaluate_cell(p)
            if i in searches:
                results[i].settings["search"] = searches[i]
    return [results[i] for i in range(len(tasks))]


@dataclass
class Clock:
    """One cell's ``train.timeout``: what it has spent of it, on its own work and on its stack's training."""

    limit: float | None
    spent: float = 0.0

    def left(self) -> float | None:
        return None if self.limit is None else max(self.limit - self.spent, 1e-3)

    def stopped(self, where: str) -> str:
        return (
            f"the cell ran past train.timeout ({self.limit:g} s) and was stopped in {where}: a plugin may be stuck "
            "there; raise the limit if the cell is merely slow"
        )

    @contextlib.contextmanager
    def own(self, task: CellTask, results: dict[int, CellResult], i: int) -> Iterator[None]:
        """A stage of the cell alone, on its clock: a failure, or running out of time, becomes its result ``i``."""
        start = time.monotonic()
        try:
            with time_limit(self.left()):
                yield
        except (KeyboardInterrupt, Interrupted):
            raise
        except TimeLimitExceeded as exc:
            results[i] = failed_result(task, self.stopped(exc.where))
        except (Exception, SystemExit) as exc:
            results[i] = failure(task, exc, traceback.format_exc())
        finally:
            self.spent += time.monotonic() - start


def train_together(learners: list[Learner], clocks: list[Clock], on_epoch: Any) -> None:
    """Train a stack, each member stopped between steps when its own time is up (``Learner.deadline``), and the
    whole stack where it hangs when the last member's is; a member still training then fails."""
    left = [clock.left() for clock in clocks]
    now = time.monotonic()
    for learner, seconds in zip(learners, left, strict=True):
        learner.deadline = None if seconds is None else now + seconds
    start = time.monotonic()
    try:
        with time_limit(None if None in left else max(left)):
            train_stack(learners, on_epoch=on_epoch)
    except TimeLimitExceeded as exc:
        for learner, clock in zip(learners, clocks, strict=True):
            if learner.running:
                learner.fail(CellFailed(clock.stopped(exc.where)))
    finally:
        for clock in clocks:
            clock.spent += time.monotonic() - start


def tuned(task: CellTask, host: PluginHost, on_epoch: Any = None) -> tuple[CellTask, dict[str, Any]]:
    """Search the task's hyperparameters inside its fold (``octbench.cell.search``): the task with the chosen setting,
    and the search's record (every trial, the choice, the time it took)."""
    tune = task.variant.tune
    record = search.search(
        tune,
        search.study_name(task.variant.name, task.config_hash, task.seed, task.fold),
        task.cell_seed,  # the same for every variant of the (seed, fold): common random draws
        lambda params: run_trial(task, host, params, on_epoch),
        goal=search.direction(tune, higher_is_better(host)),
        journal=task.journal or None,
        describe_failure=failure_reason,
    )
    suite, variant = search.apply(task.suite, task.variant, record["chosen"])
    return dataclasses.replace(task, suite=suite, variant=variant.model_copy(update={"tune": None})), record


def run_trial(task: CellTask, host: PluginHost, params: dict[str, Any], on_epoch: Any = None) -> float:
    """One trial of a search: ``task`` with ``params``, trained on the fold's inner training part and scored on its
    inner validation split. The held-out fold and the test split are never preprocessed, predicted or scored."""
    suite, variant = search.apply(task.suite, task.variant, params)
    trial = dataclasses.replace(task, suite=suite, variant=variant)
    data = load_data(dataset_of(suite, variant), host, task.data_dir)
    p = build_learner(preprocess(trial, host, data, fold_rows(trial, data.pool[1]), trial=True))
    train_stack([p.learner], on_epoch=on_epoch)
    if p.learner.error is not None:
        raise CellFailed(p.learner.error)
    return inner_score(p, task.variant.tune.metric)


def inner_score(p: Prepared, metric: str) -> float:
    """The trained model's ``metric`` on the inner validation split (``loss``: its cross-entropy)."""
    learner = p.learner
    x, y = p.on_device["inner_val"]
    batch = eval_batch_size(p.task.suite.train, p.device)
    logits = scoring_logits(learner.model, x, batch, learner.use_amp, learner.channels_last)
    if metric == "loss":
        return float(F.cross_entropy(logits.double(), y))
    scores = evaluate(p.parts["inner_val"][1], logits.cpu().numpy(), p.data.num_classes, p.host.instances("metric"))
    return scores["scalars"][metric]


def failure(task: CellTask, exc: BaseException, detail: str) -> CellResult:
    """The failed result of ``task`` for ``exc``, with a reason a user can act on."""
    return failed_result(task, failure_reason(exc), detail)


def failure_reason(exc: BaseException) -> str:
    """Why a cell failed, for a user: a plugin's sys.exit, octbench's own message, or the exception and a hint."""
    if isinstance(exc, SystemExit):
        reason = f"a plugin called sys.exit({exc.code!r}) inside the cell"
    elif isinstance(exc, CellFailed):
        reason = str(exc)
    elif isinstance(exc, torch.cuda.OutOfMemoryError):
        reason = f"out of memory: {exc}".splitlines()[0]
    else:
        reason = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ValueError) and "read-only" in str(exc):
            reason += " (octbench hands plugins read-only arrays: copy one before writing into it)"
    return reason


def failed_result(task: CellTask, reason: str, detail: str = "") -> CellResult:
    return CellResult(*task.key, task.config_hash, status="failed", error=reason, detail=detail)


@dataclass
class Prepared:
    """A cell up to training: its data on the device and a learner ready to train."""

    task: CellTask
    data: Splits
    parts: dict[str, tuple[np.ndarray, np.ndarray]]
    on_device: dict[str, tuple[torch.Tensor, torch.Tensor]]
    indices: dict[str, np.ndarray]  # per split, the images' indices (into the pool, or the test split)
    counts: dict[str, int]
    timings: dict[str, float]
    learner: Learner | None  # None until build_learner
    device: torch.device | None
    host: PluginHost
    techniques: list[Any]  # every technique instance of the cell, for their cell_values()
    unstacked: str = ""


@dataclass(frozen=True)
class Rows:
    """A cell's rows: ``pool`` indexes the dataset's pool (every row, a quick run's subset, or a check's sample);
    ``inner``, ``val`` and ``held`` index ``pool`` (the fold's inner training part, its inner validation split, the
    held-out fold). ``subset`` says which rows ``pool`` holds, for the preprocessing cache's key."""

    pool: np.ndarray
    inner: np.ndarray
    val: np.ndarray
    held: np.ndarray
    subset: Any = "full"


def fold_rows(task: CellTask, labels: np.ndarray) -> Rows:
    """The rows of ``task``'s fold: a function of the pool's labels, the seed and the fold only."""
    suite = task.suite
    pool = folds.pool_rows(suite, labels, task.seed)
    labels = labels[pool]
    train, held = folds.fold_indices(labels, suite.cv.folds, task.seed, task.fold)
    inner, val = folds.inner_split(train, labels, suite.cv.val_fraction, task.seed, task.fold)
    return Rows(pool, inner, val, held, ["quick", QUICK_POOL, task.seed] if task.quick else "full")


def prepare(task: CellTask, host: PluginHost) -> Prepared:
    """Load the data, preprocess it on the fold's training part only, build a fresh model and its learner."""
    start = time.perf_counter()
    data = load_data(dataset_of(task.suite, task.variant), host, task.data_dir)
    rows = fold_rows(task, data.pool[1])
    load_seconds = time.perf_counter() - start
    prepared = preprocess(task, host, data, rows)
    prepared.timings["load"] = load_seconds
    return build_learner(prepared)


def preprocess(
    task: CellTask, host: PluginHost, data: Splits, rows: Rows, *, use_cache: bool = True, trial: bool = False
) -> Prepared:
    """The cell's parts (training, inner validation, held-out, test) through its preprocessors: stateless leading
    steps over the whole pool once (cached), the rest fitted and resampled on the training part only. The result is
    a ``Prepared`` without its learner (``build_learner``); ``octbench check`` runs it on a sample.

    A search ``trial`` has the training and inner validation parts only, its stateless steps run on those rows
    alone (a trial's setting is seldom tried twice, so it is not cached), and no held-out or test image is touched.
    """
    suite, variant, timings = task.suite, task.variant, {}
    pool_x, pool_y = data.pool
    if len(rows.pool) < len(pool_y):  # a subset (a full run's pool is not copied)
        pool_x, pool_y = pool_x[rows.pool], pool_y[rows.pool]
    steps = [host.create("preprocessor", r.name, r.params) for r in variant.preprocessors]
    lead = stateless_prefix(steps)
    # what the data is: the dataset plugin, its parameters and its files' checksum, and the subset of it
    dataset = dataset_of(suite, variant)
    identity = [dataset.name, dataset.params, data.md5, rows.subset]
    start = time.perf_counter()
    if trial:
        seen = np.concatenate([rows.inner, rows.val])
        images = transform(steps[:lead], variant.preprocessors[:lead], pool_x[seen])
        parts = {
            "train": (frozen(images[: len(rows.inner)]), frozen(pool_y[rows.inner])),
            "inner_val": (frozen(images[len(rows.inner) :]), pool_y[rows.val]),
        }
        cached = False
    else:
        pool_x, test_x, cached = transform_whole(
            steps[:lead], variant.preprocessors[:lead], pool_x, data.test_images, identity, use_cache=use_cache
        )
        parts = {
            "train": (frozen(pool_x[rows.inner]), frozen(pool_y[rows.inner])),
            "inner_val": (frozen(pool_x[rows.val]), pool_y[rows.val]),
            "heldout": (frozen(pool_x[rows.held]), pool_y[rows.held]),
        }
        if suite.cv.test_split:
            parts["test"] = (test_x, data.test_labels)
    timings["preprocess"] = time.perf_counter() - start
    timings["preprocess_cached"] = float(cached)
    counts = {name: len(y) for name, (_, y) in parts.items()}
    context = [
        *identity,
        hashlib.sha1(rows.inner.tobytes()).hexdigest(),
        refs_of(variant.preprocessors[:lead], steps[:lead]),
    ]
    parts, prep_timings = apply_preprocessors(
        steps[lead:], variant.preprocessors[lead:], parts, task.cell_seed, context, data.num_classes,
        use_cache=use_cache,
    )  # fmt: skip
    timings["preprocess"] += prep_timings.pop("preprocess")
    timings.update(prep_timings)
    counts["train_after_resampling"] = len(parts["train"][1])
    indices = {"heldout": rows.pool[rows.held], "test": np.arange(counts.get("test", 0))}
    return Prepared(task, data, parts, {}, indices, counts, timings, None, None, host, steps)


def build_learner(p: Prepared) -> Prepared:
    """A fresh model for the shape the preprocessors produced, its augmenters and regularizers, the parts on the
    device, and the learner that trains it: ``p`` ready to train."""
    task, suite, variant, host = p.task, p.task.suite, p.task.variant, p.host
    device = resolve(task.device)
    deterministic_algorithms(suite.train.deterministic)
    torch.manual_seed(task.cell_seed)
    model_spec = host.create("model", variant.model.name, variant.model.params)
    # the shape the pipeline produced: a preprocessor may turn grayscale into RGB, or resize
    shape = p.parts["train"][0].shape
    model = model_spec.build(int(shape[-1]), p.data.num_classes, int(shape[1])).to(device)
    augmenters = [host.create("augmenter", r.name, r.params) for r in variant.augmenters]
    regularizers = [host.create("regularizer", r.name, r.params) for r in variant.regularizers]
    for reg in regularizers:
        model = reg.configure_model(model)

    start = time.perf_counter()
    p.on_device = {name: to_device(x, y, device) for name, (x, y) in p.parts.items()}
    p.timings["to_device"] = time.perf_counter() - start
    fast = (task.precision == "bf16", fast_path(suite.train, device)[1]) if task.precision else None
    p.learner = Learner(
        model,
        p.on_device["train"],
        p.on_device["inner_val"],
        config=suite.train,
        epochs=suite.epochs,
        augmenters=augmenters,
        regularizers=regularizers,
        seed=task.cell_seed,
        num_classes=p.data.num_classes,
        fast=fast,
        host=host,
    )
    p.device = device
    p.techniques = [*p.techniques, model_spec, *augmenters, *regularizers]
    return p


def evaluate_cell(p: Prepared) -> CellResult:
    """The trained model on the held-out fold and the test split, in float32, and the cell's result record."""
    task, learner, timings = p.task, p.learner, p.timings
    outcome = learner.result
    timings["train"] = outcome.train_seconds
    timings["validate"] = outcome.validate_seconds
    timings["train_images_per_s"] = outcome.images_per_s
    timings["train_warm"] = float(outcome.warm)
    result = CellResult(
        *task.key, task.config_hash, history=outcome.history, counts=p.counts, device=describe(p.device)
    )
    start = time.perf_counter()
    model = with_test_views(learner.model, learner.regularizers)  # test-time augmentation, where a variant has it
    for split in ("heldout", "test"):
        if split not in p.on_device:
            continue
        x, _y = p.on_device[split]
        logits, speed = timed_predict(
            model, x, eval_batch_size(task.suite.train, p.device), learner.use_amp, learner.channels_last
        )
        validate.check_logits(logits, len(x), p.data.num_classes, task.variant.model.name)
        y_true = p.parts[split][1]
        result.evaluations[split] = evaluate(y_true, logits, p.data.num_classes, p.host.instances("metric"))
        result.predictions[split] = {"indices": p.indices[split], "y_true": y_true, "logits": logits}
        if split == "heldout":
            timings["infer_images_per_s"] = speed
    timings["evaluate"] = time.perf_counter() - start
    explained = explain(p, result)
    result.timings = timings
    result.values = {
        f"{technique.name}: {key}": float(value)
        for technique in p.techniques
        for key, value in technique.cell_values().items()
    }
    result.settings = {
        "precision": "bf16" if learner.use_amp else "fp32",
        "channels_last": learner.channels_last,
        "stack_size": int(timings.get("stack_size", 1)),
        "not_stacked_because": p.unstacked,
        "per_member": learner.per_member,
        "parameters": sum(t.numel() for t in learner.model.parameters() if t.requires_grad),
        "threads": torch.get_num_threads(),
        "deterministic": bool(task.suite.train.deterministic),
        "attribution": explained,
        **({"test_views": [r.name for r in model.regularizers]} if model is not learner.model else {}),
        **peak_memory(p.device),
    }
    return result


def explain(p: Prepared, result: CellResult) -> dict[str, str]:
    """Class-activation maps of the run's fixed test images (``octbench.cell.attribution``) into ``result``; what was
    computed (method, layer), or why nothing was."""
    if "test" not in p.on_device:
        return {"unavailable": "no test split"}
    start = time.perf_counter()
    labels = p.parts["test"][1]
    chosen = attribution.rows(labels, p.data.num_classes)
    images = p.on_device["test"][0]
    model = p.learner.model
    try:
        named = next(t for t in p.techniques if isinstance(t, Model)).attribution_layer(model)
        picked = images[torch.as_tensor(chosen, device=images.device)]
        maps, layer = attribution.grad_cam(model, picked, labels[chosen], named)
    except attribution.Unavailable as exc:
        return {"unavailable": str(exc)}
    except Exception as exc:  # an explanation never costs a cell its result
        return {"unavailable": f"Grad-CAM failed: {type(exc).__name__}: {exc}"}
    result.attributions["test"] = {"indices": chosen, "maps": maps}
    p.timings["explain"] = time.perf_counter() - start
    return {"method": attribution.METHOD, "layer": layer}


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak host memory of the process so far (it may have run earlier cells) and, on CUDA, the peak device memory
    allocated since this cell's stack began (shared by the cells of a stack), in MiB."""
    import resource

    found = {"peak_host_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        found["peak_device_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return found
