"""The official test split: each variant's fold models averaged into one classifier (the headline), compared with
the reference's image by image, and what a clinical reader asks of it (rates with Wilson intervals, calibration).

The ensemble is soft voting (the mean of the fold models' probabilities), so its confusion matrix counts every
test image once. Accuracy is compared by McNemar and a paired bootstrap, AUC by DeLong (binary; one-vs-rest per
class for more classes, with a paired bootstrap of the macro AUC); both are Holm-adjusted over the variants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy.stats import norm
from sklearn.metrics import confusion_matrix

from octbench import stats
from octbench.cell.scores import Scores
from octbench.errors import OctbenchError
from octbench.report.collect import Prediction, Results, VariantResults
from octbench.stats import ALPHA


class Analysed(Protocol):
    """What the test split's verdicts read and fill in of a variant's analysis (``analysis.Analysed``)."""

    variant: VariantResults
    test_split: Headline | None
    clinical: Clinical | None


RESAMPLES = 1000
POWER = 0.8


def detectable_z(comparisons: int) -> float:
    """A difference this many standard errors from 0 is found with 80% power by a two-sided test at Holm's first
    step (ALPHA / comparisons), the level a mark must clear first."""
    return float(norm.ppf(1 - ALPHA / max(comparisons, 1) / 2) + norm.ppf(POWER))


@dataclass
class Versus:
    """A variant's ensemble against the reference's, on the same test images."""

    accuracy_delta: float
    accuracy_ci: tuple[float, float]
    mcnemar: stats.McNemar
    mcnemar_holm: float = 1.0
    accuracy_detectable: float | None = None
    auc_delta: float | None = None
    auc_ci: tuple[float, float] | None = None
    auc_p: float | None = None
    auc_holm: float | None = None
    auc_method: str = ""
    auc_detectable: float | None = None
    per_class: list[tuple[int, stats.DeLong]] = field(default_factory=list)

    @property
    def accuracy_mark(self) -> str:
        return _mark(self.mcnemar_holm, self.accuracy_delta)

    @property
    def auc_mark(self) -> str:
        return _mark(self.auc_holm, self.auc_delta)


def _mark(p: float | None, delta: float | None) -> str:
    if p is None or delta is None or p >= ALPHA:
        return ""
    return "better" if delta > 0 else "worse"


@dataclass
class Headline:
    """The ensemble of a variant's fold models on the test split."""

    models: int
    y_true: np.ndarray
    scores: Scores
    accuracy: float
    accuracy_ci: tuple[float, float]
    auc: float | None
    auc_ci: tuple[float, float] | None
    confusion: np.ndarray
    accuracy_draws: np.ndarray
    auc_draws: np.ndarray | None
    versus: Versus | None = None


def ensemble(variant: VariantResults, split: str = "test") -> tuple[np.ndarray, Scores, int] | None:
    """(labels, soft-voting scores, number of models) of a variant's models on the test split."""
    found: list[Prediction] = [c.predictions[split] for c in variant.cells if split in c.predictions]
    if not found:
        return None
    return found[0].y_true, Scores.ensemble([p.scores for p in found]), len(found)


def _headline(variant: VariantResults, num_classes: int) -> Headline | None:
    found = ensemble(variant)
    if found is None:
        return None
    y, scores, models = found
    odds = scores.log_odds
    accuracy_draws = stats.bootstrap_values(stats.weighted_accuracy, y, odds, resamples=RESAMPLES)
    every_class = all(np.any(y == c) for c in stats.auc_classes(num_classes)) and len(np.unique(y)) > 1
    auc_draws = stats.bootstrap_values(stats.weighted_macro_auc, y, odds, resamples=RESAMPLES) if every_class else None
    return Headline(
        models=models,
        y_true=y,
        scores=scores,
        accuracy=float(np.mean(scores.predicted == y)),
        accuracy_ci=stats.percentile_interval(accuracy_draws),
        auc=stats.macro_auc(y, odds) if every_class else None,
        auc_ci=stats.percentile_interval(auc_draws) if auc_draws is not None else None,
        confusion=confusion_matrix(y, scores.predicted, labels=list(range(num_classes))),
        accuracy_draws=accuracy_draws,
        auc_draws=auc_draws,
    )


def _versus(mine: Headline, base: Headline, num_classes: int, z: float) -> Versus:
    y = mine.y_true
    # the same seed and test size drew the same resamples for both: their differences are a paired bootstrap
    accuracy_deltas = mine.accuracy_draws - base.accuracy_draws
    versus = Versus(
        accuracy_delta=mine.accuracy - base.accuracy,
        accuracy_ci=stats.percentile_interval(accuracy_deltas),
        mcnemar=stats.mcnemar(mine.scores.predicted == y, base.scores.predicted == y),
        accuracy_detectable=z * float(np.nanstd(accuracy_deltas, ddof=1)),
    )
    if mine.auc is None or base.auc is None:
        return versus
    versus.auc_delta = mine.auc - base.auc
    if num_classes == 2:
        result = stats.delong(y == 1, mine.scores.log_odds[:, 1], base.scores.log_odds[:, 1])
        versus.auc_ci, versus.auc_p, versus.auc_method = (result.low, result.high), result.p_value, "DeLong"
        versus.auc_detectable = z * result.se
        return versus
    versus.per_class = [
        (c, stats.delong(y == c, mine.scores.log_odds[:, c], base.scores.log_odds[:, c]))
        for c in range(num_classes)
        if 2 <= np.sum(y == c) <= len(y) - 2
    ]
    auc_deltas = mine.auc_draws - base.auc_draws
    versus.auc_ci, versus.auc_p = stats.percentile_interval(auc_deltas), stats.bootstrap_p(auc_deltas)
    versus.auc_method = "paired bootstrap"
    versus.auc_detectable = z * float(np.nanstd(auc_deltas, ddof=1))
    return versus


def compare_on_test_split(analysed: list[Analysed], reference: VariantResults | None, num_classes: int) -> None:
    for a in analysed:
        a.test_split = _headline(a.variant, num_classes)
    base = next((a.test_split for a in analysed if a.variant is reference), None)
    pairs = [
        a.test_split
        for a in analysed
        if base is not None
        and a.test_split is not None
        and a.variant is not reference
        and np.array_equal(a.test_split.y_true, base.y_true)
    ]
    z = detectable_z(len(pairs))
    compared = []
    for mine in pairs:
        mine.versus = _versus(mine, base, num_classes, z)
        compared.append(mine.versus)
    for versus, p in zip(compared, stats.holm([v.mcnemar.p_value for v in compared]), strict=True):
        versus.mcnemar_holm = p
    with_auc = [v for v in compared if v.auc_p is not None and np.isfinite(v.auc_p)]
    for versus, p in zip(with_auc, stats.holm([v.auc_p for v in with_auc]), strict=True):
        versus.auc_holm = p


@dataclass
class Clinical:
    """Rates at the decision threshold and calibration of the headline predictions."""

    source: str
    rates: list[stats.Rates]
    brier: float
    reliability: stats.Reliability


def out_of_fold(variant: VariantResults) -> tuple[np.ndarray, Scores, int] | None:
    """(labels, scores, seed) of one seed's held-out folds together: each pool image predicted once, by the model
    that did not train on it."""
    cells = [c for c in variant.cells if "heldout" in c.predictions]
    if not cells:
        return None
    seed = cells[0].seed
    held = [c.predictions["heldout"] for c in cells if c.seed == seed]
    scores = Scores(np.concatenate([p.scores.log_p for p in held]), np.concatenate([p.scores.log_not_p for p in held]))
    return np.concatenate([p.y_true for p in held]), scores, seed


def headline_predictions(a: Analysed) -> tuple[np.ndarray, Scores, str] | None:
    """What a variant's clinical rates, calibration, confusion matrix and ROC show, counting each image once: the
    test-split ensemble, else one seed's out-of-fold predictions."""
    if a.test_split is not None:
        t = a.test_split
        return t.y_true, t.scores, f"official test split, ensemble of {t.models} fold models"
    found = out_of_fold(a.variant)
    if found is None:
        return None
    y, scores, seed = found
    return y, scores, f"out-of-fold predictions of seed {seed}, each pool image once"


def clinical(a: Analysed, positive: int | None, num_classes: int) -> Clinical | None:
    found = headline_predictions(a)
    if found is None:
        return None
    y, scores, source = found
    matrix = confusion_matrix(y, scores.predicted, labels=list(range(num_classes)))
    classes = [positive] if positive is not None else list(range(num_classes))
    probs = scores.probs
    return Clinical(
        source=source,
        rates=[stats.rates(matrix, c) for c in classes],
        brier=stats.brier(y, probs, positive),
        reliability=stats.reliability(y, probs, positive),
    )


def resolve_positive(requested: str | None, results: Results, pool_prevalence: list[float] | None) -> int | None:
    """The positive class of a binary task: the one asked for (name or index), else the dataset's declared one,
    else the minority class of the CV pool. None for more than two classes (each class is rated against the rest)."""
    names = results.class_names
    if len(names) != 2:
        if requested is not None:
            raise OctbenchError(
                f"--positive-class applies to binary tasks; this dataset has {len(names)} classes "
                "(each is rated one-vs-rest)."
            )
        return None
    if requested is not None:
        if requested in names:
            return names.index(requested)
        if requested.isdigit() and int(requested) < 2:
            return int(requested)
        raise OctbenchError(
            f"--positive-class {requested!r} is not a class of this dataset: use "
            + " or ".join(f"'{n}' ({i})" for i, n in enumerate(names))
            + "."
        )
    declared = results.dataset.get("positive_class")
    if declared is not None:
        return int(declared)
    if pool_prevalence is not None:
        return int(np.argmin(pool_prevalence))
    return 1
