"""``octbench check``, and the first thing ``octbench run`` does: every variant's pipeline on a sample, in seconds.

For each variant, the stages a cell runs (``octbench.cell``: ``preprocess``, ``build_learner``, ``train_stack``,
``evaluate_cell``) on a stratified sample of the pool: its preprocessors fitted and its resamplers applied, its model
built for the shape the pipeline actually produces (so a preprocessor that makes grayscale images RGB, or resizes
them, works), two training steps with its augmenters and regularizers, and evaluation with the logits checked and
every metric computed. A problem is reported with the variant, the stage and the plugin named, before any cell is
trained or anything written.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sklearn.model_selection import train_test_split

from octbench.cell import CellTask, Rows, build_learner, evaluate_cell, failure_reason, preprocess
from octbench.deadline import TimeLimitExceeded, time_limit
from octbench.errors import Interrupted
from octbench.suite import Variant
from octbench.train import train_stack

if TYPE_CHECKING:
    from octbench.runplan import RunPlan

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
    for variant in plan.variants:
        trial = Trial(variant, "preprocessing")
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
    return problems


@dataclass
class Trial:
    variant: Variant
    stage: str  # where the trial is, for the problem's message


def _try(trial: Trial, plan: RunPlan, rows: Rows) -> None:
    """The cell's own stages (``octbench.cell``) on the sample, with training cut to two steps of at most 32
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
