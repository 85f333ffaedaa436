"""Rank tests over several *datasets* (Demšar 2006), where each dataset is one independent block.

They are not for the folds of one dataset: folds share training images, and treating them as blocks inflates
false positives as seeds grow (the null simulation in tests/test_verdicts.py shows it). octbench uses them only
when a report merges runs of different datasets.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from octbench.stats.cv import holm
from octbench.stats.level import ALPHA

# exact permutation distributions are computed while this many (state, permutation) steps suffice; past it the
# p-value comes from random permutations
EXACT_WORK = 400_000
PERMUTATIONS = 20_000
# from this many datasets on, Iman and Davenport's F holds its level well enough to decide by it where the exact
# distribution is out of reach (with 4 datasets it rejects 6.8% of equal variants at 5%)
ASYMPTOTIC_FROM = 10


@dataclass(frozen=True)
class Friedman:
    """Friedman's test over ``blocks`` datasets. ``p`` is the p-value the study decides by: the exact permutation
    p (every way each dataset could have ranked the variants), random permutations when there are too many to
    enumerate, or Iman and Davenport's F where enough datasets make its approximation hold (``method``)."""

    statistic: float
    p_value: float
    iman_davenport: float
    p_iman_davenport: float
    average_ranks: list[float]
    critical_difference: float
    blocks: int
    method: str = "iman-davenport"
    p_permutation: float | None = None
    permutations: int | None = None  # how many random permutations; None where the distribution was exact
    smallest_p: float | None = None  # the smallest p the exact test can give with this many datasets and variants

    @property
    def p(self) -> float:
        return self.p_iman_davenport if self.method == "iman-davenport" else float(self.p_permutation)

    @property
    def patterns(self) -> int:
        """How many rank patterns the exact test weighs: (k!) ** blocks."""
        return math.factorial(len(self.average_ranks)) ** self.blocks


def friedman(scores: np.ndarray, alpha: float = ALPHA, seed: int = 0) -> Friedman:
    """``scores`` is (blocks, variants), higher is better; ranks are 1 for the best.

    With few datasets both Friedman's chi-square and Iman and Davenport's F are poor approximations (with 3
    datasets and 3 equal variants the F rejects 19.4% of the time at 5%), so the p-value is the exact permutation p
    of the rank-sum statistic wherever its distribution can be enumerated; where it cannot, ``PERMUTATIONS`` random
    permutations within datasets (seeded) below ``ASYMPTOTIC_FROM`` datasets, and Iman and Davenport's F from
    there on. The Nemenyi critical difference is for the diagram."""
    scores = np.asarray(scores, dtype=float)
    blocks, k = scores.shape
    statistic, p = stats.friedmanchisquare(*scores.T)
    f, p_f = iman_davenport(float(statistic), blocks, k)
    ranks = rank_matrix(scores)
    common = dict(
        statistic=float(statistic),
        p_value=float(p),
        iman_davenport=f,
        p_iman_davenport=p_f,
        average_ranks=ranks.mean(0).tolist(),
        critical_difference=nemenyi_cd(k, blocks, alpha),
        blocks=blocks,
        smallest_p=1.0 / math.factorial(k) ** (blocks - 1),
    )
    exact = exact_rank_sum_p(ranks)
    if exact is not None:
        return Friedman(**common, method="exact", p_permutation=exact)
    if blocks >= ASYMPTOTIC_FROM:
        return Friedman(**common)
    return Friedman(
        **common,
        method="permutation",
        p_permutation=permutation_rank_sum_p(ranks, PERMUTATIONS, seed),
        permutations=PERMUTATIONS,
    )


def rank_matrix(scores: np.ndarray) -> np.ndarray:
    """Each dataset's ranks of the variants, 1 for the best (highest score), mid-ranks for ties."""
    return stats.rankdata(-np.asarray(scores, dtype=float), axis=1)


def _rank_sum_statistic(ranks: np.ndarray) -> np.ndarray:
    """Sum over variants of the squared rank sums: Friedman's chi-square is an increasing function of it."""
    return (ranks.sum(-2) ** 2).sum(-1)


def exact_rank_sum_p(ranks: np.ndarray, work: int = EXACT_WORK) -> float | None:
    """P(statistic >= observed) when each dataset's ranks are permuted uniformly and independently (ties keep
    their mid-ranks), or None when enumerating would take more than ``work`` steps.

    The distribution is built dataset by dataset over the multiset of rank sums: the statistic is symmetric in
    the variants, and a uniform permutation makes the order of the partial sums irrelevant, so sorted sums are a
    sufficient state."""
    doubled = np.rint(2 * np.asarray(ranks, dtype=float)).astype(np.int64)  # mid-ranks are halves: exact integers
    k = doubled.shape[1]
    states = np.zeros((1, k), dtype=np.int64)
    weights = np.ones(1)
    spent = 0
    total = math.factorial(k)
    for row in doubled:
        counted = Counter(itertools.permutations(row.tolist()))
        spent += len(states) * len(counted)
        if spent > work:
            return None
        orderings = np.array(list(counted), dtype=np.int64)
        chances = np.array(list(counted.values()), dtype=float) / total
        grown = np.sort(states[:, None, :] + orderings[None, :, :], axis=-1).reshape(-1, k)
        states, which = _distinct_rows(grown)
        weights = np.bincount(which.ravel(), weights=np.outer(weights, chances).ravel(), minlength=len(states))
    observed = int((doubled.sum(0) ** 2).sum())
    return float(min(1.0, weights[(states**2).sum(1) >= observed].sum()))


def _distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a non-negative integer matrix and each row's index among them: one integer key per row
    (a positional code) where it fits in 63 bits, which sorts far faster than rows do."""
    base = int(rows.max()) + 1
    if base ** rows.shape[1] >= 1 << 63:
        return np.unique(rows, axis=0, return_inverse=True)
    keys = rows @ (base ** np.arange(rows.shape[1], dtype=np.int64))
    _, first, which = np.unique(keys, return_index=True, return_inverse=True)
    return rows[first], which


def permutation_rank_sum_p(ranks: np.ndarray, permutations: int, seed: int = 0) -> float:
    """The Monte Carlo permutation p-value, (1 + as extreme) / (1 + permutations): never 0, valid at any size."""
    ranks = np.asarray(ranks, dtype=float)
    rng = np.random.default_rng(seed)
    observed = _rank_sum_statistic(ranks)
    drawn = rng.permuted(np.broadcast_to(ranks, (permutations, *ranks.shape)), axis=-1)
    extreme = int(np.sum(_rank_sum_statistic(drawn) >= observed - 1e-9))
    return (1 + extreme) / (1 + permutations)


def iman_davenport(chi2: float, blocks: int, k: int) -> tuple[float, float]:
    """F_F = (N - 1) chi2 / (N (k - 1) - chi2) on (k - 1, (k - 1)(N - 1)) degrees of freedom."""
    denominator = blocks * (k - 1) - chi2
    if denominator <= 0:  # every block ranks the variants identically
        return float("inf"), 0.0
    f = (blocks - 1) * chi2 / denominator
    return float(f), float(stats.f.sf(f, k - 1, (k - 1) * (blocks - 1)))


def nemenyi_cd(k: int, blocks: int, alpha: float = ALPHA) -> float:
    """Demšar (2006): CD = q_alpha * sqrt(k (k + 1) / (6 N)), q_alpha from the studentized range / sqrt(2)."""
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(k * (k + 1) / (6 * blocks)))


@dataclass(frozen=True)
class RankComparison:
    rank_difference: float
    z: float
    p_value: float
    p_holm: float


def holm_against_control(
    average_ranks: Sequence[float], control: int, blocks: int, ranks: np.ndarray | None = None
) -> dict[int, RankComparison]:
    """Demšar (2006), section 3.2.2: z = (R_i - R_control) / sqrt(k (k + 1) / (6 N)) for each other variant,
    two-sided p-values, Holm-adjusted over the k - 1 comparisons. Keyed by variant index.

    Given the (blocks, variants) ``ranks`` of a study of fewer than ``ASYMPTOTIC_FROM`` datasets, each p-value is
    the exact permutation p of the same rank difference (``exact_rank_difference_p``) instead of the normal one,
    which with few datasets is too small."""
    average = np.asarray(average_ranks, dtype=float)
    k = len(average)
    se = np.sqrt(k * (k + 1) / (6 * blocks))
    others = [i for i in range(k) if i != control]
    z = [(average[i] - average[control]) / se for i in others]
    if ranks is not None and blocks < ASYMPTOTIC_FROM:
        p = [exact_rank_difference_p(ranks, i, control) for i in others]
    else:
        p = [float(2 * stats.norm.sf(abs(v))) for v in z]
    return {
        i: RankComparison(float(average[i] - average[control]), float(zi), pi, ph)
        for i, zi, pi, ph in zip(others, z, p, holm(p), strict=True)
    }


def exact_rank_difference_p(ranks: np.ndarray, first: int, second: int) -> float:
    """Two-sided P(|R_first - R_second| >= observed) when each dataset's ranks are permuted uniformly: in each
    dataset the two variants' ranks are a uniformly drawn ordered pair of that dataset's ranks, and the datasets'
    differences add up (a convolution, exact and cheap at any number of datasets)."""
    doubled = np.rint(2 * np.asarray(ranks, dtype=float)).astype(int)
    k = doubled.shape[1]
    distribution: dict[int, float] = {0: 1.0}
    for row in doubled:
        pairs = Counter(int(row[a] - row[b]) for a in range(k) for b in range(k) if a != b)
        total = k * (k - 1)
        grown: dict[int, float] = defaultdict(float)
        for value, weight in distribution.items():
            for step, count in pairs.items():
                grown[value + step] += weight * count / total
        distribution = grown
    observed = abs(int(doubled[:, first].sum() - doubled[:, second].sum()))
    return float(min(1.0, sum(w for value, w in distribution.items() if abs(value) >= observed)))


def wilcoxon(differences: Sequence[float]) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test (1.0 when every difference is zero): for two variants
    over several datasets, as Demšar recommends."""
    d = np.asarray(differences, dtype=float)
    if not np.any(d != 0):
        return 1.0
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
