"""Comparisons on the official test split, where two classifiers are paired image by image.

- ``mcnemar``: exact McNemar test of accuracy at the decision threshold (binomial on discordant images).
- ``delong``: DeLong's test of two correlated ROC AUCs (threshold-free), with the fast midrank algorithm of
  Sun & Xu (2014), and its interval for the difference.
- ``bootstrap_values`` / ``percentile_interval``: the percentile bootstrap over test images, computed from
  resample weights (``weighted_accuracy``, ``weighted_macro_auc``) so the images are sorted once, not once per
  resample. The same seed and test size give the same resamples, so values of two classifiers subtract into a
  *paired* bootstrap of their difference.

Scores for AUCs are any monotone scores per class, (N, classes); octbench passes log-odds (``octbench.cell.scores``),
which do not saturate or tie the way float32 probabilities do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats


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


@dataclass(frozen=True)
class DeLong:
    auc_first: float
    auc_second: float
    difference: float
    se: float
    low: float
    high: float
    p_value: float


def delong(positive: np.ndarray, first: np.ndarray, second: np.ndarray, confidence: float = 0.95) -> DeLong:
    """DeLong, DeLong & Clarke-Pearson (1988): AUC(first) - AUC(second) on the same images, ``positive`` a boolean
    mask, with the variance from the covariance of the two AUCs' structural components; ties count half."""
    positive = np.asarray(positive, dtype=bool)
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        raise ValueError("DeLong's test needs at least two positive and two negative images")
    scores = np.vstack([np.asarray(first, dtype=float), np.asarray(second, dtype=float)])
    pos, neg = scores[:, positive], scores[:, ~positive]
    # Sun & Xu (2014): midranks within positives, within negatives and over all images give every placement value
    rank_pos = stats.rankdata(pos, axis=1)
    rank_neg = stats.rankdata(neg, axis=1)
    rank_all = stats.rankdata(np.hstack([pos, neg]), axis=1)
    aucs = (rank_all[:, :m].sum(1) - m * (m + 1) / 2) / (m * n)
    v_pos = (rank_all[:, :m] - rank_pos) / n  # for each positive: the share of negatives it outscores
    v_neg = 1 - (rank_all[:, m:] - rank_neg) / m  # for each negative: the share of positives that outscore it
    covariance = np.cov(v_pos) / m + np.cov(v_neg) / n
    variance = float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    difference = float(aucs[0] - aucs[1])
    se = float(np.sqrt(max(variance, 0.0)))
    half = float(stats.norm.ppf(0.5 + confidence / 2)) * se
    p = float(2 * stats.norm.sf(abs(difference) / se)) if se > 0 else float(difference == 0)
    return DeLong(float(aucs[0]), float(aucs[1]), difference, se, difference - half, difference + half, p)


def bootstrap_values(
    metric: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    y_true: np.ndarray,
    scores: np.ndarray,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """``metric`` on ``resamples`` bootstrap resamples of the images (NaN where a resample has no value, e.g. an
    AUC of a resample missing a class).

    A resample is a row of counts (how often each image was drawn, ``n`` draws with replacement), so
    ``metric(y_true, scores, weights)`` gets a (rows, n) weight matrix and returns one value per row; it can sort
    or rank the images once for all resamples. The draws depend on ``seed`` and ``n`` only.
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
    return np.concatenate(values)


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    kept = np.asarray(values, dtype=float)
    kept = kept[np.isfinite(kept)]
    if len(kept) == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(kept, tail)), float(np.percentile(kept, 100 - tail))


def bootstrap_p(differences: np.ndarray) -> float:
    """Two-sided p-value of a bootstrapped difference: twice the smaller share of resamples on either side of 0,
    so p < alpha exactly when the (1 - alpha) percentile interval excludes 0."""
    kept = np.asarray(differences, dtype=float)
    kept = kept[np.isfinite(kept)]
    if len(kept) == 0:
        return float("nan")
    return float(min(1.0, 2 * min(np.mean(kept <= 0), np.mean(kept >= 0))))


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    y_true: np.ndarray,
    scores: np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a metric over resampled images."""
    return percentile_interval(bootstrap_values(metric, y_true, scores, resamples=resamples, seed=seed), confidence)


def weighted_accuracy(y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Accuracy of ``scores.argmax(1)`` for each row of image weights."""
    correct = (scores.argmax(1) == y_true).astype(float)
    return weights @ correct / weights.sum(1)


def auc_classes(num_classes: int) -> list[int]:
    """The classes whose one-vs-rest AUC a macro AUC averages: the positive class (1) alone for a binary task, whose
    AUC equals class 0's, every class otherwise (scikit-learn's ``roc_auc_score`` does the same)."""
    return [1] if num_classes == 2 else list(range(num_classes))


def weighted_macro_auc(y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro one-vs-rest ROC AUC for each row of image weights: the Mann-Whitney statistic with ties counted half,
    where image i counts ``weights[:, i]`` times. Equal to scikit-learn's ``roc_auc_score`` with ``sample_weight``
    (``multi_class='ovr'``, or the positive class's AUC for two classes); NaN where a class or its complement has
    no weight."""
    weights = np.atleast_2d(weights)
    aucs = []
    for c in auc_classes(scores.shape[1]):
        order = np.argsort(scores[:, c], kind="stable")
        sorted_scores = scores[order, c]
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


def macro_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC, equal to scikit-learn's ``roc_auc_score`` with ``multi_class='ovr'`` (and to the
    positive class's AUC for two classes); NaN when a class is missing."""
    return float(weighted_macro_auc(y_true, scores, np.ones((1, len(y_true))))[0])
