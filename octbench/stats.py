"""Statistics for comparing variants, computed from stored results (scipy).

- ``summary``: mean, sample standard deviation and a t-based 95% interval over folds x seeds.
- ``corrected_ttest``: Nadeau and Bengio's corrected resampled t-test on paired per-fold differences; the
  variance is inflated by n_test/n_train because cross-validation training sets overlap.
- ``wilcoxon``: the signed-rank test on the same differences (no normality assumption).
- ``holm``: Holm's step-down adjustment of a family of p-values.
- ``mcnemar``: exact McNemar test on paired test-split predictions (binomial on discordant pairs).
- ``bootstrap_ci``: percentile bootstrap interval of a metric over test images, computed from resample weights
  (``weighted_accuracy``, ``weighted_macro_auc``) so the images are sorted once, not once per resample.
- ``friedman`` and ``nemenyi_cd``: rank-based comparison of three or more variants over the same cells, and the
  Nemenyi critical difference of average ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Summary:
    mean: float | None
    std: float | None
    low: float | None
    high: float | None
    n: int


def summary(values: Sequence[float | None], confidence: float = 0.95) -> Summary:
    finite = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(finite) == 0:
        return Summary(None, None, None, None, 0)
    mean = float(finite.mean())
    if len(finite) == 1:
        return Summary(mean, 0.0, None, None, 1)
    std = float(finite.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(finite) - 1) * std / np.sqrt(len(finite)))
    return Summary(mean, std, mean - half, mean + half, len(finite))


@dataclass(frozen=True)
class PairedTest:
    mean_difference: float
    low: float
    high: float
    statistic: float
    p_value: float
    n: int


def corrected_ttest(differences: Sequence[float], test_train_ratio: float, confidence: float = 0.95) -> PairedTest:
    """Nadeau & Bengio (2003): t = mean(d) / sqrt((1/J + n2/n1) * var(d)), J-1 degrees of freedom."""
    d = np.asarray(differences, dtype=float)
    j = len(d)
    if j < 2:
        raise ValueError("the corrected t-test needs at least two paired differences")
    mean, var = float(d.mean()), float(d.var(ddof=1))
    scale = np.sqrt((1 / j + test_train_ratio) * var)
    critical = float(stats.t.ppf(0.5 + confidence / 2, j - 1))
    if scale == 0:
        p = 1.0 if mean == 0 else 0.0
        return PairedTest(mean, mean, mean, float("inf") if mean else 0.0, p, j)
    t = mean / scale
    p = float(2 * stats.t.sf(abs(t), j - 1))
    return PairedTest(mean, mean - critical * scale, mean + critical * scale, float(t), p, j)


def wilcoxon(differences: Sequence[float]) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test (1.0 when every difference is zero)."""
    d = np.asarray(differences, dtype=float)
    if not np.any(d != 0):
        return 1.0
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


@dataclass(frozen=True)
class McNemar:
    only_first_correct: int
    only_second_correct: int
    p_value: float


def mcnemar(correct_first: np.ndarray, correct_second: np.ndarray) -> McNemar:
    """Exact McNemar test: are the two classifiers' error rates on the same images different?"""
    a = np.asarray(correct_first, dtype=bool)
    b = np.asarray(correct_second, dtype=bool)
    n01, n10 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = n01 + n10
    p = 1.0 if n == 0 else float(stats.binomtest(min(n01, n10), n, 0.5, alternative="two-sided").pvalue)
    return McNemar(n01, n10, p)


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    y_true: np.ndarray,
    scores: np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a metric over resampled images.

    A resample is a row of counts (how often each image was drawn, ``n`` draws with replacement), so
    ``metric(y_true, scores, weights)`` gets a (resamples, n) weight matrix and returns one value per row; it can
    sort or rank the images once for all resamples. Resamples whose value is NaN (one missing a class has no AUC)
    are dropped.
    """
    rng = np.random.default_rng(seed)
    n = len(y_true)
    chunk = max(1, 2_000_000 // max(n, 1))  # bounds the weight matrix at 16 MB whatever the test split's size
    values = []
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        drawn = rng.integers(0, n, (rows, n)) + n * np.arange(rows)[:, None]
        weights = np.bincount(drawn.ravel(), minlength=rows * n).reshape(rows, n).astype(float)
        values.append(np.asarray(metric(y_true, scores, weights), dtype=float))
    kept = np.concatenate(values)
    kept = kept[np.isfinite(kept)]
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(kept, tail)), float(np.percentile(kept, 100 - tail))


def weighted_accuracy(y_true: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Accuracy of ``probs.argmax(1)`` for each row of image weights."""
    correct = (probs.argmax(1) == y_true).astype(float)
    return weights @ correct / weights.sum(1)


def weighted_macro_auc(y_true: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro one-vs-rest ROC AUC for each row of image weights: the Mann-Whitney statistic with ties counted half,
    where image i counts ``weights[:, i]`` times. Equal to scikit-learn's ``roc_auc_score`` with ``sample_weight``
    (``multi_class='ovr'``, or the positive class's AUC for two classes); NaN where a class or its complement has
    no weight."""
    weights = np.atleast_2d(weights)
    classes = [1] if probs.shape[1] == 2 else range(probs.shape[1])
    aucs = []
    for c in classes:
        order = np.argsort(probs[:, c], kind="stable")
        sorted_scores = probs[order, c]
        ties = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
        w = weights[:, order]
        pos = w * (y_true[order] == c)
        neg = w - pos
        if len(ties) < len(order):  # tied scores count as one group
            pos, neg = np.add.reduceat(pos, ties, axis=1), np.add.reduceat(neg, ties, axis=1)
        below = np.cumsum(neg, axis=1) - neg
        n_pos, n_neg = pos.sum(1), neg.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (pos * (below + 0.5 * neg)).sum(1) / (n_pos * n_neg)
        aucs.append(np.where((n_pos > 0) & (n_neg > 0), auc, np.nan))
    return np.mean(aucs, axis=0)


def macro_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC, equal to scikit-learn's ``roc_auc_score`` with ``multi_class='ovr'`` (and to the
    positive class's AUC for two classes); NaN when a class is missing."""
    return float(weighted_macro_auc(y_true, probs, np.ones((1, len(y_true))))[0])


@dataclass(frozen=True)
class Friedman:
    statistic: float
    p_value: float
    average_ranks: list[float]
    critical_difference: float
    blocks: int


def friedman(scores: np.ndarray, alpha: float = 0.05) -> Friedman:
    """``scores`` is (blocks, variants), higher is better. Ranks are 1 for the best."""
    scores = np.asarray(scores, dtype=float)
    blocks, k = scores.shape
    statistic, p = stats.friedmanchisquare(*scores.T)
    ranks = stats.rankdata(-scores, axis=1).mean(0)
    return Friedman(float(statistic), float(p), ranks.tolist(), nemenyi_cd(k, blocks, alpha), blocks)


def nemenyi_cd(k: int, blocks: int, alpha: float = 0.05) -> float:
    """Demšar (2006): CD = q_alpha * sqrt(k (k + 1) / (6 N)), q_alpha from the studentized range / sqrt(2)."""
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(k * (k + 1) / (6 * blocks)))
