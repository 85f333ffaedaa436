"""Statistics for comparing variants, computed from stored results (scipy).

- ``summary``: mean, sample standard deviation and a t-based 95% interval over folds x seeds.
- ``corrected_ttest``: Nadeau and Bengio's corrected resampled t-test on paired per-fold differences; the
  variance is inflated by n_test/n_train because cross-validation training sets overlap.
- ``wilcoxon``: the signed-rank test on the same differences (no normality assumption).
- ``holm``: Holm's step-down adjustment of a family of p-values.
- ``mcnemar``: exact McNemar test on paired test-split predictions (binomial on discordant pairs).
- ``bootstrap_ci``: percentile bootstrap interval of a metric over test images.
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
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: np.ndarray,
    scores: np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric(y_true, scores)`` over resampled images."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    values = []
    for _ in range(resamples):
        index = rng.integers(0, n, n)
        value = metric(y_true[index], scores[index])
        if np.isfinite(value):  # a resample missing a class has no AUC
            values.append(value)
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def macro_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC from ranks (Mann-Whitney U), equal to scikit-learn's ``roc_auc_score`` with
    ``multi_class='ovr'`` (and to the positive class's AUC for two classes) but fast enough to bootstrap."""
    classes = [1] if probs.shape[1] == 2 else range(probs.shape[1])
    aucs = []
    for c in classes:
        positive = y_true == c
        n_pos = int(positive.sum())
        n_neg = len(y_true) - n_pos
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        ranks = stats.rankdata(probs[:, c])
        aucs.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs))


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
