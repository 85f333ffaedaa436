"""``octbench run``: suite -> checked plan -> cells (skipping finished ones) -> store -> report.

Everything that can be wrong with the input (suite, plugins, parameters, data) is found before anything is
written; a failing cell is recorded with its reason and the rest of the suite goes on. One run holds a results
folder at a time (``octbench.lock``). Ctrl-C or SIGTERM stops the run: finished cells stay, the run is marked
interrupted, the report of what finished is written, and ``RunInterrupted`` says how to resume.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from statistics import median

import numpy as np
from rich.markup import escape

from octbench import folds, tuning
from octbench.cell import CellResult, load_data
from octbench.console import console
from octbench.device import describe, resolve
from octbench.errors import Interrupted, OctbenchError
from octbench.lock import ensure_free, folder_lock
from octbench.plan import check_references, make_tasks, plugin_paths, weight_choosers
from octbench.plugins import PluginHost
from octbench.preflight import check_suite
from octbench.provenance import collect
from octbench.report.publish import publish
from octbench.signals import stop_on_sigterm
from octbench.stack import unstackable
from octbench.store import Store
from octbench.suite import LIST_KINDS, QUICK_POOL, load_suite, resolve_variants
from octbench.technique import RunContext

# a cell training at less than this share of the run's median images/s so far is reported as slowed down
COLLAPSE = 0.25


@dataclass
class RunSummary:
    out: Path
    planned: int
    skipped: int
    done: int
    failed: int
    seconds: float
    report: Path

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


class RunInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped a run; ``summary`` counts what finished before."""

    def __init__(self, summary: RunSummary, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.summary, self.signum = summary, signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def run_suite(
    suite_file: str | Path,
    *,
    out: str | Path | None = None,
    data_dir: str | None = None,
    device: str | None = None,
    overrides: list[str] = (),
    fresh: bool = False,
    quick: bool = False,
    progress: bool = True,
    check: bool = True,
) -> RunSummary:
    """Run a suite into ``out`` (see the module docstring). ``check``: first try every variant on a sample
    (``octbench.preflight``), and stop with every problem found before anything is written."""
    started = time.perf_counter()
    suite, text = load_suite(suite_file, overrides)
    paths = plugin_paths(suite, suite_file)
    host = PluginHost.load(paths)
    variants = resolve_variants(suite)
    check_references(suite, variants, host, text, str(suite_file))
    executor = host.create("executor", suite.executor.name, suite.executor.params)
    executor.check()
    # quick runs never share a folder with full results: their cells would replace them
    out_dir = Path(out) if out else Path("reports") / (f"{suite.name}-quick" if quick else suite.name)
    ensure_free(out_dir)  # a busy folder is refused before the slow work below
    torch_device = resolve(device or suite.train.device)
    data = load_data(suite, host, data_dir, progress=progress)
    pool_labels = data.pool[1]
    if quick:
        pool_labels = pool_labels[folds.quick_subset(pool_labels, QUICK_POOL, suite.cv.seeds[0])]
    folds.check_foldable(pool_labels, suite.cv.folds, data.class_names)
    if check:
        problems = check_suite(suite, variants, host, data, str(torch_device))
        if problems:
            listed = "\n  ".join(map(str, problems))
            raise OctbenchError(
                f"the trial of each variant on a sample found {len(problems)} problem{'s' if len(problems) > 1 else ''}"
                f" (nothing was written; `octbench run --no-check` skips this trial):\n  {listed}"
            )
    for warning in weight_choosers(variants, host):
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")

    with folder_lock(out_dir, " ".join(sys.argv)):
        _remove_partial_files(out_dir)
        if fresh:
            for name in ("results.sqlite", "results.sqlite-wal", "results.sqlite-shm", "report.html"):
                (out_dir / name).unlink(missing_ok=True)
        store = Store(out_dir / "results.sqlite")
        if quick and store.has_full_results():
            store.close()
            raise OctbenchError(
                f"{out_dir} holds results of a full run, which a --quick run would replace: give the quick run its "
                f"own --out (its default is reports/{suite.name}-quick)."
            )
        precisions = choose_precisions(suite, variants, host, data, torch_device)
        tasks = make_tasks(
            suite,
            variants,
            host,
            data_md5=data.md5,
            device=str(torch_device),
            data_dir=data_dir,
            quick=quick,
            paths=paths,
            precisions=precisions,
        )
        suite_hash = suite.digest()
        used = sorted(
            {(kind, ref.name) for v in variants for key, kind in LIST_KINDS.items() for ref in getattr(v, key)}
            | {("model", v.model.name) for v in variants}
            | {("dataset", suite.dataset.name)}
        )
        plan = tuning.executor(
            suite, executor, torch_device, len(tasks), measure=partial(measure_stack, suite, variants, host, data,
                                                                       torch_device, precisions)
        )  # fmt: skip
        provenance = collect(
            executor=plan,
            device=describe(torch_device),
            suite_hash=suite_hash,
            data_md5=data.md5,
            data_source=data.source,
            quick=quick,
            plugins={f"{kind}:{name}": host.provenance(kind, name) for kind, name in used},
            host=host,
            plugin_paths=paths,
        )
        run_id = store.start_run(
            suite_name=suite.name,
            suite_hash=suite_hash,
            suite_text=text,
            suite_json=suite.model_dump_json(),
            quick=quick,
            provenance=provenance,
            dataset={
                "name": suite.dataset.name,
                "params": suite.dataset.params,
                "class_names": data.class_names,
                "channels": data.channels,
                "image_size": data.image_size,
                "md5": data.md5,
                "source": data.source,
                "sizes": {"train": len(data.train_labels), "val": len(data.val_labels), "test": len(data.test_labels)},
                "class_counts": {
                    split: np.bincount(labels, minlength=data.num_classes).tolist()
                    for split, labels in (
                        ("train", data.train_labels),
                        ("val", data.val_labels),
                        ("test", data.test_labels),
                    )
                },
                "positive_class": data.meta.get("positive_class"),
            },
        )
        store.record_plan(run_id, tasks)
        finished = store.finished()
        todo = [t for t in tasks if (*t.key, t.config_hash) not in finished]
        if len(todo) < len(tasks):
            console.print(
                escape(f"resuming: {len(tasks) - len(todo)} of {len(tasks)} cells already finished in {out_dir}")
            )

        results: list[CellResult] = []
        status, stopped, unwritable = "interrupted", None, None
        try:
            with stop_on_sigterm():
                try:
                    _run(todo, plan, executor, suite, host, data, paths, store, run_id, torch_device, progress, results)
                    status = "failed" if any(r.status == "failed" for r in results) else "done"
                except KeyboardInterrupt:
                    stopped = signal.SIGINT
                except Interrupted as exc:
                    stopped = exc.signum
                except sqlite3.OperationalError as exc:  # a full disk, an I/O error: stop, keeping what is stored
                    unwritable = exc
        finally:
            with contextlib.suppress(sqlite3.Error):
                store.finish_run(run_id, status)
            store.close()
        if unwritable is not None:
            raise OctbenchError(
                f"could not store a result in {store.path} ({unwritable}); the {len(results)} cells of this run "
                "stored before it are kept. Free space (or fix the disk) and rerun the same command to resume."
            )
        report = publish([out_dir])[0]
    failed = sum(r.status == "failed" for r in results)
    summary = RunSummary(
        out=out_dir,
        planned=len(tasks),
        skipped=len(tasks) - len(todo),
        done=len(results) - failed,
        failed=failed,
        seconds=time.perf_counter() - started,
        report=report,
    )
    if stopped is not None:
        raise RunInterrupted(summary, int(stopped))
    return summary


def measure_stack(suite, variants, host, data, device, precisions, most: int) -> tuple[int, str]:
    """(stack size, why) for a GPU, from a trial of the first variant's model (``octbench.tuning.stack_size``);
    at most ``most``."""
    variant = variants[0]
    try:
        model = host.create("model", variant.model.name, variant.model.params).build(
            data.channels, data.num_classes, data.image_size
        )
    except Exception:  # the model's cells fail with the reason when they run
        return most, f"the model '{variant.model.name}' could not be built for a trial"
    why = unstackable(model)
    if why is not None:
        return 1, f"the model '{variant.model.name}' cannot be stacked: {why}"
    config = suite.train.model_copy(update={"precision": precisions.get(variant.name) or suite.train.precision})
    image = (data.channels, data.image_size, data.image_size)
    found = tuning.stack_size(config, variant.model.name, model, image, data.num_classes, device)
    speeds = ", ".join(f"{size}: {speed:,.0f}" for size, speed in found["images_per_s"].items())
    size = min(int(found["choice"]), most)
    return size, f"fastest in a trial of '{variant.model.name}' (images/s by stack size: {speeds})"


def choose_precisions(suite, variants, host, data, device) -> dict[str, str]:
    """bf16 or fp32 per variant, by the suite or by a measured trial per model plugin (``octbench.tuning``)."""
    chosen: dict[str, str] = {}
    by_model: dict[str, str] = {}
    for variant in variants:
        key = variant.model.name
        if key not in by_model:
            try:
                model = host.create("model", variant.model.name, variant.model.params).build(
                    data.channels, data.num_classes, data.image_size
                )
            except Exception:  # a model that cannot be built fails its cells, with the reason, when they run
                by_model[key] = ""
                continue
            image = (data.channels, data.image_size, data.image_size)
            by_model[key] = tuning.precision(suite.train, key, model, image, data.num_classes, device)
        chosen[variant.name] = by_model[key]
    return chosen


def _run(todo, plan, executor, suite, host, data, paths, store: Store, run_id: int, device, progress: bool,
         results: list[CellResult]) -> None:  # fmt: skip
    speeds: list[float] = []
    notes: set[str] = set()

    def record(result: CellResult) -> None:
        store.commit(run_id, result)
        results.append(result)
        _report(result, speeds)
        reason = result.settings.get("not_stacked_because")
        if reason and reason not in notes:
            notes.add(reason)
            console.print(escape(f"note: {result.variant} trained alone, not stacked: {reason}"))
        for part in result.settings.get("per_member") or ():
            if part not in notes:  # the stack shares the rest of its step; this part costs a call per member
                notes.add(part)
                console.print(escape(f"note: in {result.variant}'s stack, {part}: it runs member by member"))

    stacks = [todo[i : i + plan["stack"]] for i in range(0, len(todo), plan["stack"])]
    context = RunContext(
        data=data,
        plugin_files=plugin_files(paths),
        threads=plan["threads"],
        device=str(device),
        progress=progress,
        host=host,
    )
    executor.run(stacks, record, context)


def plugin_files(paths: tuple[str, ...]) -> dict[str, bytes]:
    """The suite's plugin files (folders' .py files included), path to content: what an executor on another
    machine writes out before it loads plugins."""
    found = {}
    for target in paths:
        path = Path(target)
        for file in sorted(path.glob("*.py")) if path.is_dir() else [path]:
            if file.is_file():
                found[str(file)] = file.read_bytes()
    return found


def _remove_partial_files(folder: Path) -> None:
    """Half-written files (``.NAME.XXXX.part``) a killed run or report left; the lock says none is being written."""
    for leftover in folder.glob(".*.part"):
        leftover.unlink(missing_ok=True)


def _report(result: CellResult, speeds: list[float]) -> None:
    """One line per failed cell, and per cell whose training slowed to a fraction of the run's pace."""
    label = escape(f"{result.variant} seed {result.seed} fold {result.fold}")
    if result.status == "failed":
        console.print(f"[red]cell failed[/red] {label}: {escape(result.error)}")
        return
    speed = result.timings.get("train_images_per_s")
    if not speed or not result.timings.get("train_warm"):
        return
    if len(speeds) >= 2 and speed < COLLAPSE * median(speeds):
        console.print(
            f"[yellow]warning:[/yellow] {label} trained at {speed:,.0f} images/s, under a quarter of this run's "
            f"median so far ({median(speeds):,.0f}): another process may be competing for the CPU or GPU, and the "
            "report's throughput for it is not representative (on a shared CPU, OMP_WAIT_POLICY=PASSIVE keeps torch's "
            "threads from spinning)"
        )
    speeds.append(speed)
