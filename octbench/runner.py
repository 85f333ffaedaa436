"""``octbench run``: suite -> checked plan -> cells (skipping finished ones) -> store -> report.

Everything that can be wrong with the input (suite, plugins, parameters, data) is found before anything is
written; a failing cell is recorded with its reason and the rest of the suite goes on. One run holds a results
folder at a time (``octbench.store.lock``). Ctrl-C or SIGTERM stops the run: finished cells stay, the run is marked
interrupted, the report of what finished is written, and ``RunInterrupted`` says how to resume.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median

from rich.markup import escape

from octbench.cell import search
from octbench.cell.device import describe
from octbench.cell.execute import CellResult, CellTask
from octbench.console import console
from octbench.cpu_wait import decide as wait_policy
from octbench.dataset import provided
from octbench.errors import Interrupted, OctbenchError
from octbench.plan import dependencies
from octbench.plan.check import print_notes, weight_conflicts
from octbench.plan.preflight import check_suite
from octbench.plan.run import RunPlan, plan_run
from octbench.report.publish import publish
from octbench.signals import stop_on_sigterm
from octbench.store import Store
from octbench.store.lock import folder_lock
from octbench.store.provenance import collect
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
    """Run a suite into ``out`` (see the module docstring): plan, lock, store, execute, publish. ``check``: first try
    every variant on a sample (``octbench.plan.preflight``), and stop with every problem found before anything is
    written."""
    started = time.perf_counter()
    wait_policy()  # before any worker process starts, which inherits it (the command line decided already)
    plan = plan_run(
        suite_file, overrides=overrides, quick=quick, device=device, data_dir=data_dir, out=out, claim=True,
        progress=progress,
    )  # fmt: skip
    if check:
        refuse_problems(check_suite(plan))
    for warning in weight_conflicts(plan.variants, plan.host):
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    print_notes(plan.notes, lambda line: console.print(escape(line)))

    with folder_lock(plan.out, " ".join(sys.argv)):
        store = _open_store(plan, fresh)
        run_id = record_run(store, plan)
        todo = _unfinished(plan, store)
        results: list[CellResult] = []
        status, stopped, unwritable = "interrupted", None, None
        try:
            with stop_on_sigterm():
                try:
                    _run(todo, plan, store, run_id, progress, results)
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
        report = publish([plan.out])[0]
    failed = sum(r.status == "failed" for r in results)
    summary = RunSummary(
        out=plan.out,
        planned=len(plan.tasks),
        skipped=len(plan.tasks) - len(todo),
        done=len(results) - failed,
        failed=failed,
        seconds=time.perf_counter() - started,
        report=report,
    )
    if stopped is not None:
        raise RunInterrupted(summary, int(stopped))
    return summary


def refuse_problems(problems: list) -> None:
    """Stop the run, before anything is written, when the trial on a sample found problems."""
    if problems:
        listed = "\n  ".join(map(str, problems))
        raise OctbenchError(
            f"the trial of each variant on a sample found {len(problems)} problem{'s' if len(problems) > 1 else ''}"
            f" (nothing was written; `octbench run --no-check` skips this trial):\n  {listed}"
        )


def _open_store(plan: RunPlan, fresh: bool) -> Store:
    """The results folder's store, with a killed run's half-written files removed; emptied first with ``fresh``. A
    quick run never writes into a store that holds full results (its cells would replace them)."""
    _remove_partial_files(plan.out)
    if fresh:  # the searches' journal too: a fresh run draws its trials afresh rather than reuse old choices
        for name in ("results.sqlite", "results.sqlite-wal", "results.sqlite-shm", "report.html", *search.FILES):
            (plan.out / name).unlink(missing_ok=True)
    store = Store(plan.out / "results.sqlite")
    if plan.quick and store.has_full_results():
        store.close()
        raise OctbenchError(
            f"{plan.out} holds results of a full run, which a --quick run would replace: give the quick run its "
            f"own --out (its default is reports/{plan.suite.name}-quick)."
        )
    return store


def record_run(store: Store, plan: RunPlan) -> int:
    """A new run in ``store``: the suite as written and as resolved, the dataset, the provenance, and the plan of
    cells; its id."""
    suite_hash = plan.suite.digest()
    run_id = store.start_run(
        suite_name=plan.suite.name,
        suite_hash=suite_hash,
        suite_text=plan.text,
        suite_json=plan.suite.model_dump_json(),
        quick=plan.quick,
        provenance=_provenance(plan, suite_hash),
        dataset=plan.dataset_record(),
    )
    store.record_plan(run_id, plan.tasks)
    return run_id


def _provenance(plan: RunPlan, suite_hash: str) -> dict:
    """What a run records of where its numbers came from (``octbench.store.provenance.collect``), for ``plan``."""
    return collect(
        executor=asdict(plan.execution),
        device=describe(plan.device),
        suite_hash=suite_hash,
        data_md5=plan.data.md5,
        data_source=plan.data.source,
        data_dir=plan.data_dir,
        quick=plan.quick,
        pools=plan.pools(),
        plugins={f"{kind}:{name}": plan.host.provenance(kind, name) for kind, name in plan.depends_on.plugins},
        files={path: dependencies.file_hash(path) for path in plan.depends_on.files},
        host=plan.host,
        plugin_paths=plan.plugin_paths,
        notes=plan.notes,
    )


def _unfinished(plan: RunPlan, store: Store) -> list[CellTask]:
    """The plan's cells without a stored result of the same configuration."""
    finished = store.finished()
    todo = [t for t in plan.tasks if (*t.key, t.config_hash) not in finished]
    if len(todo) < len(plan.tasks):
        console.print(
            escape(f"resuming: {len(plan.tasks) - len(todo)} of {len(plan.tasks)} cells already finished in {plan.out}")
        )
    return todo


def _run(todo: list[CellTask], plan: RunPlan, store: Store, run_id: int, progress: bool,
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

    size = plan.execution.stack
    stacks = [todo[i : i + size] for i in range(0, len(todo), size)]
    context = RunContext(
        data=plan.data,
        plugin_files=plugin_files(plan.plugin_paths),
        threads=plan.execution.threads,
        device=str(plan.device),
        progress=progress,
        host=plan.host,
        datasets=provided(plan.datasets(), plan.data_dir),
    )
    plan.executor.run(stacks, record, context)


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
