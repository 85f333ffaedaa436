"""What a clinical reader asks of a classifier: rates at the decision threshold with Wilson intervals, and how
well its probabilities are calibrated."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Proportion:
    """``k`` of ``n``, with its Wilson score interval (Wilson 1927; Newcombe 1998's recommended method)."""

    k: int
    n: int
    low: float | None
    high: float | None

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None


def wilson(k: int, n: int, confidence: float = 0.95) -> Proportion:
    if n == 0:
        return Proportion(0, 0, None, None)
    interval = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return Proportion(int(k), int(n), float(interval.low), float(interval.high))


@dataclass(frozen=True)
class Rates:
    """One class against the rest at the decision threshold (argmax)."""

    positive: int
    sensitivity: Proportion
    specificity: Proportion
    ppv: Proportion
    npv: Proportion


def rates(confusion: np.ndarray, positive: int) -> Rates:
    """Sensitivity (recall of ``positive``), specificity, positive and negative predictive values from a confusion
    matrix (rows true, columns predicted), one class against the rest."""
    confusion = np.asarray(confusion)
    tp = int(confusion[positive, positive])
    fn = int(confusion[positive].sum()) - tp
    fp = int(confusion[:, positive].sum()) - tp
    tn = int(confusion.sum()) - tp - fn - fp
    return Rates(positive, wilson(tp, tp + fn), wilson(tn, tn + fp), wilson(tp, tp + fp), wilson(tn, tn + fn))


def brier(y_true: np.ndarray, probs: np.ndarray, positive: int | None = None) -> float:
    """Mean squared error of the predicted probabilities: of the positive class's probability for a binary task
    (scikit-learn's ``brier_score_loss``), else summed over classes (Brier 1950). 0 is perfect."""
    y_true = np.asarray(y_true)
    if positive is not None:
        return float(np.mean((probs[:, positive] - (y_true == positive)) ** 2))
    onehot = np.eye(probs.shape[1])[y_true]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


@dataclass(frozen=True)
class Reliability:
    """Binned predicted probability against the observed frequency: what a reliability diagram draws."""

    what: str
    confidence: list[float]
    observed: list[float]
    counts: list[int]
    ece: float


def reliability(y_true: np.ndarray, probs: np.ndarray, positive: int | None = None, bins: int = 10) -> Reliability:
    """For a binary task, the predicted risk of the positive class against how often it was the truth; otherwise
    the top class's probability against how often it was right (Guo et al. 2017). The expected calibration
    error is the count-weighted mean gap over equal-width bins."""
    y_true = np.asarray(y_true)
    if positive is not None:
        predicted, hit, what = probs[:, positive], (y_true == positive), "positive-class probability"
    else:
        predicted, hit, what = probs.max(1), probs.argmax(1) == y_true, "top-class probability"
    which = np.minimum((predicted * bins).astype(int), bins - 1)
    confidence, observed, counts = [], [], []
    gap = 0.0
    for b in range(bins):
        inside = which == b
        if not inside.any():
            continue
        confidence.append(float(predicted[inside].mean()))
        observed.append(float(hit[inside].mean()))
        counts.append(int(inside.sum()))
        gap += inside.sum() * abs(confidence[-1] - observed[-1])
    return Reliability(what, confidence, observed, counts, float(gap / max(len(y_true), 1)))


def prevalence(labels: np.ndarray, num_classes: int) -> list[float]:
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=num_classes)
    return (counts / max(counts.sum(), 1)).tolist()
