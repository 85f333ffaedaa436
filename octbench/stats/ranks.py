"""Rank tests over several *datasets* (Demšar 2006), where each dataset is one independent block.

They are not for the folds of one dataset: folds share training images, and treating them as blocks inflates
false positives as seeds grow (the null simulation in tests/test_verdicts.py shows it). octbench uses them only
when a report merges runs of different datasets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from octbench.stats.cv import holm


@dataclass(frozen=True)
class Friedman:
    statistic: float
    p_value: float
    iman_davenport: float
    p_iman_davenport: float
    average_ranks: list[float]
    critical_difference: float
    blocks: int


def friedman(scores: np.ndarray, alpha: float = 0.05) -> Friedman:
    """``scores`` is (blocks, variants), higher is better; ranks are 1 for the best. Iman and Davenport's F
    (Demšar's recommendation: Friedman's chi-square is needlessly conservative) and the Nemenyi critical
    difference of average ranks for the diagram."""
    scores = np.asarray(scores, dtype=float)
    blocks, k = scores.shape
    statistic, p = stats.friedmanchisquare(*scores.T)
    f, p_f = iman_davenport(float(statistic), blocks, k)
    ranks = stats.rankdata(-scores, axis=1).mean(0)
    return Friedman(float(statistic), float(p), f, p_f, ranks.tolist(), nemenyi_cd(k, blocks, alpha), blocks)


def iman_davenport(chi2: float, blocks: int, k: int) -> tuple[float, float]:
    """F_F = (N - 1) chi2 / (N (k - 1) - chi2) on (k - 1, (k - 1)(N - 1)) degrees of freedom."""
    denominator = blocks * (k - 1) - chi2
    if denominator <= 0:  # every block ranks the variants identically
        return float("inf"), 0.0
    f = (blocks - 1) * chi2 / denominator
    return float(f), float(stats.f.sf(f, k - 1, (k - 1) * (blocks - 1)))


def nemenyi_cd(k: int, blocks: int, alpha: float = 0.05) -> float:
    """Demšar (2006): CD = q_alpha * sqrt(k (k + 1) / (6 N)), q_alpha from the studentized range / sqrt(2)."""
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(k * (k + 1) / (6 * blocks)))


@dataclass(frozen=True)
class RankComparison:
    rank_difference: float
    z: float
    p_value: float
    p_holm: float


def holm_against_control(average_ranks: Sequence[float], control: int, blocks: int) -> dict[int, RankComparison]:
    """Demšar (2006), section 3.2.2: z = (R_i - R_control) / sqrt(k (k + 1) / (6 N)) for each other variant,
    two-sided normal p-values, Holm-adjusted over the k - 1 comparisons. Keyed by variant index."""
    ranks = np.asarray(average_ranks, dtype=float)
    k = len(ranks)
    se = np.sqrt(k * (k + 1) / (6 * blocks))
    others = [i for i in range(k) if i != control]
    z = [(ranks[i] - ranks[control]) / se for i in others]
    p = [float(2 * stats.norm.sf(abs(v))) for v in z]
    return {
        i: RankComparison(float(ranks[i] - ranks[control]), float(zi), pi, ph)
        for i, zi, pi, ph in zip(others, z, p, holm(p), strict=True)
    }


def wilcoxon(differences: Sequence[float]) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test (1.0 when every difference is zero): for two variants
    over several datasets, as Demšar recommends."""
    d = np.asarray(differences, dtype=float)
    if not np.any(d != 0):
        return 1.0
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
