"""Verdicts on cross-validation cells of one dataset, where the (seed, fold) cells are *not* independent.

Training sets of different folds share most of their images, so the variance of a mean over cells is larger
than ``var / J``. Every interval and test here inflates it by ``1/J + n_test/n_train`` (Nadeau & Bengio 2003;
Bouckaert & Frank 2004), which keeps false positives at their nominal rate as seeds grow, where tests that treat
cells as independent blocks (Friedman, Wilcoxon over folds) do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from octbench.stats.level import ALPHA


@dataclass(frozen=True)
class Summary:
    mean: float | None
    std: float | None
    low: float | None
    high: float | None
    n: int
    clipped: bool = False  # the interval reached past the metric's range and was cut to it


def clip_interval(low: float, high: float, bounds: tuple[float, float] | None) -> tuple[float, float, bool]:
    """(low, high) cut to ``bounds`` (a metric's range), and whether that cut anything: a t interval knows
    nothing of a metric's range, and an interval for a precision that reaches -0.096 says nothing true."""
    if bounds is None:
        return low, high, False
    cut_low, cut_high = max(low, bounds[0]), min(high, bounds[1])
    return cut_low, cut_high, (cut_low, cut_high) != (low, high)


def _finite(values: Sequence[float | None]) -> np.ndarray:
    return np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)


def summary(
    values: Sequence[float | None],
    confidence: float = 0.95,
    test_train_ratio: float = 0.0,
    bounds: tuple[float, float] | None = None,
) -> Summary:
    """Mean, sample SD, and a t interval of the mean over ``values``, cut to ``bounds`` where given.

    With ``test_train_ratio`` (n_test / n_train of the folds) the interval is the corrected one, for values that
    come from overlapping cross-validation training sets; 0 gives the textbook interval for independent values.
    """
    finite = _finite(values)
    if len(finite) == 0:
        return Summary(None, None, None, None, 0)
    mean = float(finite.mean())
    if len(finite) == 1:
        return Summary(mean, 0.0, None, None, 1)
    std = float(finite.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(finite) - 1) * _scale(std**2, len(finite), test_train_ratio))
    low, high, clipped = clip_interval(mean - half, mean + half, bounds)
    return Summary(mean, std, low, high, len(finite), clipped)


def _scale(variance: float, n: int, test_train_ratio: float) -> float:
    return float(np.sqrt((1 / n + test_train_ratio) * variance))


def _corrected_moments(differences: Sequence[float], test_train_ratio: float, test: str) -> tuple[int, float, float]:
    """(J, mean, corrected scale) of the paired differences, the inputs both fold tests share."""
    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        raise ValueError(f"{test} needs at least two paired differences")
    return len(d), float(d.mean()), _scale(float(d.var(ddof=1)), len(d), test_train_ratio)


@dataclass(frozen=True)
class PairedTest:
    mean_difference: float
    low: float
    high: float
    statistic: float
    p_value: float
    n: int
    clipped: bool = False


def corrected_ttest(
    differences: Sequence[float],
    test_train_ratio: float,
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> PairedTest:
    """Nadeau & Bengio (2003): t = mean(d) / sqrt((1/J + n2/n1) * var(d)), J-1 degrees of freedom. ``bounds``: the
    range a difference can take (-1 to 1 for a metric between 0 and 1), which the interval is cut to."""
    j, mean, scale = _corrected_moments(differences, test_train_ratio, "the corrected t-test")
    critical = float(stats.t.ppf(0.5 + confidence / 2, j - 1))
    if scale == 0:
        p = 1.0 if mean == 0 else 0.0
        return PairedTest(mean, mean, mean, float("inf") if mean else 0.0, p, j)
    t = mean / scale
    p = float(2 * stats.t.sf(abs(t), j - 1))
    low, high, clipped = clip_interval(mean - critical * scale, mean + critical * scale, bounds)
    return PairedTest(mean, low, high, float(t), p, j, clipped)


@dataclass(frozen=True)
class Bayes:
    """Posterior probabilities that the variant is worse than, practically equivalent to, or better than the
    reference, with ``rope`` the half-width of the region of practical equivalence."""

    p_worse: float
    p_equivalent: float
    p_better: float
    rope: float


def bayesian_correlated_ttest(differences: Sequence[float], test_train_ratio: float, rope: float) -> Bayes:
    """Benavoli, Corani, Demšar & Zaffalon (2017), "Time for a change", section 4: the posterior of the mean
    difference is Student t with J-1 degrees of freedom, located at mean(d), scaled by sqrt((1/J + rho/(1-rho))
    var(d)), where rho/(1-rho) = n_test/n_train is the correlation that overlapping training sets induce.

    This is baycomp's ``CorrelatedTTest`` in closed form (a test checks it against baycomp's numbers); it is
    written here because baycomp derives rho from a number of runs that must divide the number of cells, which
    fails as soon as one cell of a run has failed, while the ratio measured on the folds always exists.
    """
    j, mean, scale = _corrected_moments(differences, test_train_ratio, "the Bayesian correlated t-test")
    if scale == 0:
        worse, better = float(mean < -rope), float(mean > rope)
    else:
        posterior = stats.t(j - 1, loc=mean, scale=scale)
        worse, better = float(posterior.cdf(-rope)), float(posterior.sf(rope))
    return Bayes(worse, max(0.0, 1.0 - worse - better), better, rope)


def detectable_difference(
    std: float, n: int, test_train_ratio: float, *, alpha: float = ALPHA, power: float = 0.8
) -> float | None:
    """The smallest true mean difference that the two-sided corrected t-test at ``alpha`` detects with probability
    ``power``, for ``n`` paired cells whose differences have standard deviation ``std`` (noncentral t).

    "Not significant" with a detectable difference larger than the effects that matter means *not enough data*,
    not *no effect*.
    """
    if n < 2 or std is None or not np.isfinite(std):
        return None
    scale = _scale(std**2, n, test_train_ratio)
    if scale == 0:
        return 0.0
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(delta: float) -> float:
        shift = delta / scale
        # the far tail on the wrong side is negligible, and scipy's nct returns NaN for some of it
        wrong_side = float(np.nan_to_num(stats.nct.cdf(-critical, df, shift), nan=0.0))
        return float(stats.nct.sf(critical, df, shift)) + wrong_side - power

    upper = scale * (critical + stats.norm.ppf(power) + 10)
    return float(optimize.brentq(shortfall, 0.0, upper) if shortfall(upper) > 0 else upper)


def seeds_to_detect(
    std: float, folds: int, test_train_ratio: float, target: float, *, most: int = 20, alpha: float = ALPHA
) -> int | None:
    """How many seeds of ``folds``-fold cross-validation would make ``target`` detectable (80% power) at the
    observed spread, or None when even ``most`` seeds would not: the fold overlap term n_test/n_train does not
    shrink with more seeds, so past a point only more folds or more data help."""
    for seeds in range(1, most + 1):
        found = detectable_difference(std, seeds * folds, test_train_ratio, alpha=alpha)
        if found is not None and found <= target:
            return seeds
    return None


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
