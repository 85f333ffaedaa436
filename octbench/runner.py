"""``octbench run``: suite -> checked plan -> cells (skipping finished ones) -> store -> report.

Everything that can be wrong with the input (suite, plugins, parameters, data) is found before anything is
written; a failing cell is recorded with its reason and the rest of the suite goes on.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from octbench import folds
from octbench.cell import CellResult, execute, load_data
from octbench.console import console, task_progress
from octbench.device import describe, resolve
from octbench.plan import check_references, make_tasks, plugin_paths
from octbench.plugins import PluginHost
from octbench.provenance import collect
from octbench.report.publish import publish
from octbench.store import Store
from octbench.suite import QUICK_POOL, load_suite, resolve_variants


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
) -> RunSummary:
    started = time.perf_counter()
    suite, text = load_suite(suite_file, overrides)
    paths = plugin_paths(suite, suite_file)
    host = PluginHost.load(paths)
    variants = resolve_variants(suite)
    check_references(suite, variants, host, text, str(suite_file))
    torch_device = resolve(device or suite.train.device)
    data = load_data(suite, host, data_dir, progress=progress)
    pool_labels = data.pool[1]
    if quick:
        pool_labels = pool_labels[folds.quick_subset(pool_labels, QUICK_POOL, suite.cv.seeds[0])]
    folds.check_foldable(pool_labels, suite.cv.folds, data.class_names)

    out_dir = Path(out) if out else Path("reports") / suite.name
    if fresh and out_dir.exists():
        for name in ("results.sqlite", "results.sqlite-wal", "results.sqlite-shm", "report.html"):
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = Store(out_dir / "results.sqlite")
    tasks = make_tasks(
        suite, variants, data_md5=data.md5, device=str(torch_device), data_dir=data_dir, quick=quick, paths=paths
    )
    suite_hash = suite.digest()
    provenance = collect(
        device=describe(torch_device),
        suite_hash=suite_hash,
        data_md5=data.md5,
        data_source=data.source,
        quick=quick,
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
        console.print(f"resuming: {len(tasks) - len(todo)} of {len(tasks)} cells already finished in {out_dir}")

    results: list[CellResult] = []
    status = "interrupted"
    try:
        # CPU results depend on the thread count (reduction order), so every cell gets the same number of
        # threads whichever way it runs: train.threads, else torch's default for this machine
        threads = suite.train.threads or torch.get_num_threads()
        if suite.executor.parallel > 1 and len(todo) > 1:
            warning = oversubscription(suite.executor.parallel, threads, torch_device)
            if warning:
                console.print(f"[yellow]warning:[/yellow] {warning}")
            results = _run_cells_in_processes(todo, suite.executor.parallel, threads, store, run_id, progress)
        else:
            torch.set_num_threads(threads)
            results = _run_cells(todo, host, store, run_id, progress)
        status = "failed" if any(r.status == "failed" for r in results) else "done"
    finally:
        store.finish_run(run_id, status)
        store.close()
    report = publish([out_dir])[0]
    failed = sum(r.status == "failed" for r in results)
    return RunSummary(
        out=out_dir,
        planned=len(tasks),
        skipped=len(tasks) - len(todo),
        done=len(results) - failed,
        failed=failed,
        seconds=time.perf_counter() - started,
        report=report,
    )


def oversubscription(parallel: int, threads: int, device) -> str | None:
    """Why ``parallel`` cells of ``threads`` CPU threads each would compete for this machine's cores, if they do."""
    cores = os.cpu_count() or 1
    if device.type != "cpu" or parallel * threads <= cores:
        return None
    return (
        f"{parallel} cells at once with {threads} threads each on {cores} CPU cores: they will compete for the cores "
        f"(2 cells x 2 threads on 2 cores ran the smoke suite 3.6x slower than one at a time); "
        f"set train.threads to {max(1, cores // parallel)}"
    )


def _report_failure(result: CellResult) -> None:
    if result.status == "failed":
        console.print(f"[red]cell failed[/red] {result.variant} seed {result.seed} fold {result.fold}: {result.error}")


def _run_cells_in_processes(
    todo, workers: int, threads: int, store: Store, run_id: int, progress: bool
) -> list[CellResult]:
    """Several cells at once, each in a worker process; the parent commits each result as it arrives, so the
    store and resumption behave exactly as with one process, and results are identical to one at a time."""
    context = multiprocessing.get_context("spawn")
    results = []
    with (
        task_progress() as bars,
        ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=worker_init, initargs=(threads,)
        ) as pool,
    ):
        cells = bars.add_task("cells", total=len(todo), status=f"{workers} at a time", visible=progress)
        futures = [pool.submit(execute, task) for task in todo]
        try:
            for future in as_completed(futures):
                result = future.result()
                store.commit(run_id, result)
                results.append(result)
                _report_failure(result)
                bars.update(cells, advance=1, status=f"{result.variant} seed {result.seed} fold {result.fold}")
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results


def worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _run_cells(todo, host, store: Store, run_id: int, progress: bool) -> list[CellResult]:
    results = []
    with task_progress() as bars:
        cells = bars.add_task("cells", total=len(todo), status="", visible=progress)
        epochs = bars.add_task("epochs", total=None, status="", visible=False)
        for task in todo:
            label = f"{task.variant.name} seed {task.seed} fold {task.fold}"
            bars.update(cells, status=label)
            bars.reset(epochs, total=task.suite.train.epochs, visible=progress, status="")

            def on_epoch(logs, bars=bars, epochs=epochs):
                bars.update(epochs, advance=1, status=f"val_loss {logs['val_loss']:.3f} val_acc {logs['val_acc']:.3f}")

            result = execute(task, host, on_epoch=on_epoch)
            store.commit(run_id, result)
            results.append(result)
            _report_failure(result)
            bars.update(cells, advance=1)
        bars.update(epochs, visible=False)
    return results
