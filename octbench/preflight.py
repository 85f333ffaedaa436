"""``octbench check``, and the first thing ``octbench run`` does: every variant's pipeline on a sample, in seconds.

For each variant: its preprocessors fitted and its resamplers applied on a stratified sample of the pool, its
model built for the shape the pipeline actually produces (so a preprocessor that makes grayscale images RGB, or
resizes them, works), two training steps with its augmenters and regularizers, and evaluation logits checked. A
problem is reported with the variant and the plugin named, before any cell is trained or anything written.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from octbench import validate
from octbench.cell import failure_reason
from octbench.deadline import TimeLimitExceeded, time_limit
from octbench.errors import Interrupted
from octbench.pipeline import apply_preprocessors
from octbench.plugins import PluginHost
from octbench.suite import Suite, Variant
from octbench.technique import Splits

if TYPE_CHECKING:
    from octbench.runplan import RunPlan
from octbench.train import Learner, scoring_logits, to_device, train_stack

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
    suite, host, data, device = plan.suite, plan.host, plan.data, str(plan.device)
    x, y = data.pool
    index = sample_rows(plan)
    train_index, held_index = train_test_split(index, test_size=0.25, stratify=_stratify(y[index]), random_state=0)
    sample = Sample(x, y, np.sort(train_index), np.sort(held_index))
    limit = suite.train.timeout or LIMIT
    problems = []
    for variant in plan.variants:
        trial = Trial(variant, "preprocessing")
        try:
            with time_limit(limit):
                _try(trial, suite, host, data, sample, device)
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
class Sample:
    """The stratified sample every variant is tried on: the pool, and the sample's training and held-out rows."""

    x: np.ndarray
    y: np.ndarray
    train: np.ndarray
    held: np.ndarray


@dataclass
class Trial:
    variant: Variant
    stage: str  # where the trial is, for the problem's message


def _try(trial: Trial, suite: Suite, host: PluginHost, data: Splits, sample: Sample, device: str) -> None:
    variant, x, y = trial.variant, sample.x, sample.y
    parts = {"train": (x[sample.train], y[sample.train]), "heldout": (x[sample.held], y[sample.held])}
    steps = [host.create("preprocessor", r.name, r.params) for r in variant.preprocessors]
    parts, _ = apply_preprocessors(
        steps, variant.preprocessors, parts, 0, ["preflight", time.time()], data.num_classes, use_cache=False
    )
    trial.stage = f"building model '{variant.model.name}'"
    train_x, train_y = parts["train"]
    torch.manual_seed(0)
    model = host.create("model", variant.model.name, variant.model.params).build(
        int(train_x.shape[-1]), data.num_classes, int(train_x.shape[1])
    )
    augmenters = [host.create("augmenter", r.name, r.params) for r in variant.augmenters]
    regularizers = [host.create("regularizer", r.name, r.params) for r in variant.regularizers]
    for reg in regularizers:
        model = reg.configure_model(model)
    trial.stage = "training"
    batch = min(suite.train.batch_size, 32)
    config = suite.train.model_copy(update={"batch_size": batch, "epochs": 1, "compile": False})
    dev = torch.device(device)
    keep = slice(0, 2 * batch)  # two steps
    learner = Learner(
        model.to(dev),
        to_device(train_x[keep], train_y[keep], dev),
        to_device(*parts["heldout"], dev),
        config=config,
        epochs=1,
        augmenters=augmenters,
        regularizers=regularizers,
        seed=0,
        num_classes=data.num_classes,
        host=host,
    )
    train_stack([learner], epochs=1)
    if learner.error is not None:
        raise learner.error
    trial.stage = "evaluation"
    held = to_device(*parts["heldout"], dev)[0]
    logits = scoring_logits(learner.model, held, 256, learner.use_amp, learner.channels_last)
    validate.check_logits(logits.cpu().numpy(), len(held), data.num_classes, variant.model.name)


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
