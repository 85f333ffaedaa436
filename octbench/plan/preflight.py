"""``octbench check``, and the first thing ``octbench run`` does: every variant's pipeline on a sample, in seconds.

For each variant, the stages a cell runs (``octbench.cell.execute``: ``preprocess``, ``build_learner``, ``train_stack``,
``evaluate_cell``) on a stratified sample of the pool: its preprocessors fitted and its resamplers applied, its model
built for the shape the pipeline actually produces (so a preprocessor that makes grayscale images RGB, or resizes
them, works), two training steps with its augmenters and regularizers, and evaluation with the logits checked and
every metric computed. A problem is reported with the variant, the stage and the plugin named, before any cell is
trained or anything written.

A trial runs in octbench's own process (it costs seconds, a worker process would cost more), so a plugin that kills
that process where no exception reaches (a crash in a C extension, the kernel's out-of-memory killer) ends the
command with nothing said. A marker beside octbench's cache says which variant's trial was at which stage; the next
check of the same suite finds it left behind and says so (``Marker``).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.model_selection import train_test_split

from octbench.cell.deadline import TimeLimitExceeded, time_limit
from octbench.cell.execute import CellTask, Rows, build_learner, evaluate_cell, failure_reason, preprocess
from octbench.cell.train import train_stack
from octbench.console import console
from octbench.data.files import cache_dir, write_atomically
from octbench.errors import Interrupted
from octbench.suite import Variant

if TYPE_CHECKING:
    from octbench.plan.run import RunPlan

SAMPLE = 512  # images fitted and resampled on: enough for SMOTE's neighbours in OCTMNIST's smallest class
LIMIT = 300.0  # seconds a variant's trial may take where the suite sets no train.timeout


@dataclass
class Problem:
    variant: str
    stage: str
    reason: str

    def __str__(self) -> str:
        return f"variant '{self.variant}', {self.stage}: {self.reason}"


def check_suite(plan: RunPlan) -> list[Problem]:
    """Every problem a short trial of each variant of ``plan`` finds (an empty list when all pass). The sample is
    drawn from the rows the first seed's cells fold (a quick run's subset in a quick run). Each trial has a time
    limit (``train.timeout``, else ``LIMIT``), so a plugin that never returns is a problem named, not a hung
    command."""
    suite = plan.suite
    pool = np.sort(sample_rows(plan))
    inner, held = train_test_split(
        np.arange(len(pool)), test_size=0.25, stratify=_stratify(plan.data.pool[1][pool]), random_state=0
    )
    rows = Rows(pool, np.sort(inner), np.sort(held), np.sort(held), subset="check")
    limit = suite.train.timeout or LIMIT
    problems = []
    marker = Marker(plan.source)
    left = marker.left_behind()
    if left:
        console.print(f"[yellow]warning:[/yellow] {left}")
    try:
        for variant in plan.variants:
            trial = Trial(variant, marker)
            try:
                with time_limit(limit):
                    _try(trial, plan, rows)
            except (KeyboardInterrupt, Interrupted):
                raise
            except TimeLimitExceeded as exc:
                source = "train.timeout" if suite.train.timeout else "the trial's own limit"
                reason = (
                    f"did not finish within {limit:g} s ({source}); stopped in {exc.where}, where a plugin may be stuck"
                )
                problems.append(Problem(variant.name, trial.stage, reason))
            except (Exception, SystemExit) as exc:
                problems.append(Problem(variant.name, trial.stage, failure_reason(exc)))
                traceback.clear_frames(exc.__traceback__)
    finally:
        marker.clear()
    return problems


class Trial:
    """Where one variant's trial is, for a problem's message and the marker a killed process leaves behind."""

    def __init__(self, variant: Variant, marker: Marker | None = None) -> None:
        self.variant, self.marker = variant, marker
        self.stage = "preprocessing"

    @property
    def stage(self) -> str:
        return self._stage

    @stage.setter
    def stage(self, stage: str) -> None:
        self._stage = stage
        if self.marker is not None:
            self.marker.at(self.variant.name, stage)


class Marker:
    """A file naming the variant and stage of the trial now running, written before each stage and removed when every
    trial has ended; one left behind means a process was killed in that trial."""

    def __init__(self, suite_file: str) -> None:
        self.suite = str(Path(suite_file).resolve()) if Path(suite_file).exists() else suite_file
        self.path = cache_dir() / "trials" / f"{hashlib.sha1(self.suite.encode()).hexdigest()[:16]}.json"

    def at(self, variant: str, stage: str) -> None:
        record = {"variant": variant, "stage": stage, "pid": os.getpid(), "started": _now()}
        with contextlib.suppress(OSError):  # a read-only cache: only the message after a kill is lost
            write_atomically(self.path, json.dumps(record).encode())

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)

    def left_behind(self) -> str:
        """What a killed trial of this suite left behind ('' when none, or when its process is still running: another
        check of the same suite, side by side)."""
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return ""
        if _alive(int(record.get("pid", 0))):
            return ""
        self.clear()
        return (
            f"the last trial of this suite (process {record.get('pid')}, {record.get('started')}) ended without a word "
            f"in variant '{record.get('variant')}', {record.get('stage')}: its process was killed where no error "
            "could be caught (a crash in a plugin's C extension, or the kernel's out-of-memory killer: `dmesg` says "
            "which). The trials run again now; if the command dies again, that variant is the one to look at."
        )


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _alive(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _try(trial: Trial, plan: RunPlan, rows: Rows) -> None:
    """The cell's own stages (``octbench.cell.execute``) on the sample, with training cut to two steps of at most 32
    images, no compilation, and no cache."""
    suite = plan.suite
    batch = min(suite.train.batch_size, 32)
    train = suite.train.model_copy(update={"batch_size": batch, "epochs": 1, "compile": False, "timeout": None})
    cv = suite.cv.model_copy(update={"test_split": False})
    trial_suite = suite.model_copy(update={"train": train, "cv": cv})
    task = CellTask(trial_suite, trial.variant, seed=0, fold=0, config_hash="", device=str(plan.device))
    prepared = preprocess(task, plan.host, plan.variant_data[trial.variant.name], rows, use_cache=False)
    trial.stage = f"building model '{trial.variant.model.name}'"
    x, y = prepared.parts["train"]
    prepared.parts["train"] = (x[: 2 * batch], y[: 2 * batch])  # two steps
    build_learner(prepared)
    trial.stage = "training"
    train_stack([prepared.learner], epochs=1)
    if prepared.learner.error is not None:
        raise prepared.learner.error
    trial.stage = "evaluation"
    evaluate_cell(prepared)


def _stratify(labels: np.ndarray) -> np.ndarray | None:
    counts = np.bincount(labels)
    return labels if counts[counts > 0].min() >= 2 else None


def sample_rows(plan: RunPlan) -> np.ndarray:
    """The pool rows every variant's trial uses: a stratified sample of ``SAMPLE`` of the first seed's rows."""
    rows = plan.pool_rows(plan.suite.cv.seeds[0])
    labels = plan.data.pool[1][rows]
    if len(labels) <= SAMPLE:
        return rows
    keep, _ = train_test_split(rows, train_size=SAMPLE, stratify=_stratify(labels), random_state=0)
    return keep
