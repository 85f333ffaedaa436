"""Numbers the report states for one dataset: summaries, verdicts against the reference on the CV cells and on
the official test split, clinical rates, calibration, and whether CV and test agree.

What each verdict rests on (see ``octbench.stats``): CV cells share training images, so CV intervals and tests
use the corrected variance (Nadeau & Bengio) and the Bayesian correlated t-test; on the test split the variants'
fold-model ensembles are paired image by image (McNemar, DeLong, paired bootstrap). Rank tests over folds are
not used: they treat folds as independent datasets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from scipy.stats import spearmanr

from octbench import stats
from octbench.errors import OctbenchError
from octbench.report.collect import Results, VariantResults
from octbench.report.testsplit import Clinical, Headline, clinical, compare_on_test_split, resolve_positive

TIMINGS = (
    "load",
    "preprocess",
    "resample",
    "to_device",
    "train",
    "validate",
    "evaluate",
    "train_images_per_s",
    "infer_images_per_s",
    "preprocess_cached",
    "resample_cached",
)
ALPHA = 0.05
POWER = 0.8
T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    """What a reader may choose: the metric compared, the region of practical equivalence, the positive class.
    Defaults come from the suite's ``report`` block (``octbench.suite.ReportSettings``)."""

    metric: str = "accuracy"
    rope: float = 0.01
    positive_class: str | None = None

    @classmethod
    def of_suite(cls, suite: dict[str, Any], **overrides: Any) -> Options:
        """A stored suite's settings, overridden by whatever is given (None means not given)."""
        stored = suite.get("report", {})
        chosen = {k: stored[k] for k in ("metric", "rope", "positive_class") if stored.get(k) is not None}
        chosen.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**chosen)


@dataclass
class Comparison:
    """One variant against the reference on one metric, over the paired CV cells."""

    test: stats.PairedTest
    p_holm: float
    bayes: stats.Bayes
    detectable: float | None
    std: float
    higher_is_better: bool = True

    @property
    def mark(self) -> str:
        """'better' / 'worse' when the Holm-adjusted corrected t-test rejects equality at 5%, else ''."""
        if self.p_holm >= ALPHA:
            return ""
        return "better" if (self.test.mean_difference > 0) == self.higher_is_better else "worse"


@dataclass
class VariantAnalysis:
    variant: VariantResults
    summaries: dict[str, dict[str, stats.Summary]]
    timing: dict[str, stats.Summary]
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    test_split: Headline | None = None
    clinical: Clinical | None = None


@dataclass
class Agreement:
    """Do CV and the test split rank the variants alike? (accuracy: CV mean against the test ensemble)"""

    spearman: float | None
    mean_gap: float
    flips: list[str]
    prevalence_shift: float | None

    @property
    def disagree(self) -> bool:
        return bool(self.flips) or (self.spearman is not None and self.spearman < 0.5)


@dataclass
class Analysis:
    options: Options
    variants: list[VariantAnalysis]
    reference: VariantResults | None
    test_train_ratio: float
    folds: int
    seeds: int
    class_names: list[str]
    positive: int | None
    prevalence: dict[str, list[float]]
    agreement: Agreement | None = None
    advice: str = ""
    problems: list[str] = field(default_factory=list)
    metric_names: list[str] = field(default_factory=list)
    higher_is_better: dict[str, bool] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return self.options.metric

    def attempt(self, section: str, compute: Callable[..., T], *args: Any) -> T | None:
        """``compute(*args)``, or None with the reason recorded in ``problems`` when the stored results do not allow
        it (so one odd cell cannot keep a folder's report from rendering)."""
        try:
            return compute(*args)
        except Exception as exc:
            self.problems.append(f"{section}: {type(exc).__name__}: {exc}")
            return None


def _values(variant: VariantResults, split: str, metric: str) -> dict[tuple[int, int], float]:
    return {
        (c.seed, c.fold): c.metrics[split][metric]
        for c in variant.cells
        if split in c.metrics and c.metrics[split].get(metric) is not None
    }


def fold_ratio(results: Results) -> float:
    """n_test / n_train of the folds, measured on the stored cells (1/(k-1) for k equal folds)."""
    ratios = [
        c.counts["heldout"] / (c.counts["train"] + c.counts["inner_val"])
        for v in results.variants
        for c in v.cells
        if c.counts.get("heldout")
    ]
    folds = results.runs[0].folds
    return float(np.mean(ratios)) if ratios else 1 / max(folds - 1, 1)


def analyse(results: Results, options: Options | None = None) -> Analysis:
    options = options or Options()
    ratio = fold_ratio(results)
    analysed = [
        VariantAnalysis(
            variant=v,
            summaries={
                "heldout": {
                    m: stats.summary(list(_values(v, "heldout", m).values()), test_train_ratio=ratio)
                    for m in results.metric_names
                },
                "test": {m: stats.summary(list(_values(v, "test", m).values())) for m in results.metric_names},
                "cell": {
                    m: stats.summary(list(values.values()))
                    for m in results.reported_values
                    if (values := _values(v, "cell", m))
                },
            },
            timing={k: stats.summary([c.timings.get(k) for c in v.cells]) for k in TIMINGS},
        )
        for v in results.variants
    ]
    prevalence = _prevalence(results)
    positive = resolve_positive(options.positive_class, results, prevalence.get("CV pool"))
    analysis = Analysis(
        options=options,
        variants=analysed,
        reference=results.reference,
        test_train_ratio=ratio,
        folds=max(r.folds for r in results.runs),
        seeds=max(len(r.seeds) for r in results.runs),
        class_names=results.class_names,
        positive=positive,
        prevalence=prevalence,
        metric_names=results.metric_names,
        higher_is_better={m: results.higher_is_better(m) for m in results.metric_names},
    )
    if options.metric not in analysis.metric_names:
        raise OctbenchError(
            f"no metric '{options.metric}' in these results; choose one of {', '.join(analysis.metric_names)}."
        )
    # each section stands alone: one that cannot be computed from what is stored is named on the page, with why,
    # and the rest of the report still renders
    if results.reference is not None:
        analysis.attempt("verdicts on CV", _cv_verdicts, analysis, options)
    analysis.attempt(
        "test-split verdicts", compare_on_test_split, analysed, results.reference, len(results.class_names)
    )
    for a in analysed:
        a.clinical = analysis.attempt(
            f"clinical metrics of {a.variant.key}", clinical, a, positive, len(results.class_names)
        )
    analysis.agreement = analysis.attempt("CV-test agreement", _agreement, analysed, prevalence)
    return analysis


def _cv_verdicts(analysis: Analysis, options: Options) -> None:
    reference = analysis.reference
    others = [a for a in analysis.variants if a.variant is not reference]
    for metric in analysis.metric_names:
        base = _values(reference, "heldout", metric)
        found = []
        for a in others:
            mine = _values(a.variant, "heldout", metric)
            common = sorted(set(base) & set(mine))
            if len(common) < 2:
                continue
            d = np.array([mine[k] - base[k] for k in common])
            std = float(d.std(ddof=1))
            found.append(
                (
                    a,
                    stats.corrected_ttest(d, analysis.test_train_ratio),
                    stats.bayesian_correlated_ttest(d, analysis.test_train_ratio, options.rope),
                    stats.detectable_difference(std, len(d), analysis.test_train_ratio, alpha=ALPHA, power=POWER),
                    std,
                )
            )
        adjusted = stats.holm([t.p_value for _, t, *_ in found])
        higher = analysis.higher_is_better.get(metric, True)
        for (a, t, bayes, detectable, std), p in zip(found, adjusted, strict=True):
            a.comparisons[metric] = Comparison(t, p, bayes, detectable, std, higher)
    analysis.advice = _advice(analysis, options)


def _advice(analysis: Analysis, options: Options) -> str:
    """A sentence on what this design could not detect, and what would help, for the compared metric."""
    found = [a.comparisons[options.metric] for a in analysis.variants if options.metric in a.comparisons]
    if not found:
        return ""
    std = float(np.median([c.std for c in found]))
    detectable = stats.detectable_difference(std, found[0].test.n, analysis.test_train_ratio)
    if detectable is None or detectable <= options.rope:
        return ""
    design = f"{analysis.folds} folds × {analysis.seeds} seed{'s' if analysis.seeds > 1 else ''}"
    text = (
        f"At the typical spread of paired differences here (SD {std:.3f}), {design} can only reliably detect (80% "
        f"power) differences in {options.metric.replace('_', ' ')} of about {detectable:.3f} or more, larger than "
        f"the ±{options.rope:g} that counts as practically equivalent."
    )
    seeds = stats.seeds_to_detect(std, analysis.folds, analysis.test_train_ratio, options.rope)
    if seeds is not None and seeds > analysis.seeds:
        return text + f" About {seeds} seeds (cv.seeds) would bring it down to ±{options.rope:g}."
    return text + (
        " No number of seeds up to 20 would: the overlap of training sets between folds does not shrink with more "
        "seeds, so only more folds or more data would."
    )


def _prevalence(results: Results) -> dict[str, list[float]]:
    """Class shares in the official train split (when recorded), the CV pool (one seed's held-out folds cover it
    once) and the test split."""
    k = len(results.class_names)
    found: dict[str, list[float]] = {}
    counts = results.dataset.get("class_counts", {})
    if "train" in counts:
        found["train"] = stats.prevalence(np.repeat(np.arange(k), counts["train"]), k)
    for v in results.variants:
        cells = [c for c in v.cells if "heldout" in c.predictions]
        if not cells:
            continue
        seed = cells[0].seed
        pool = np.concatenate([c.predictions["heldout"].y_true for c in cells if c.seed == seed])
        found["CV pool"] = stats.prevalence(pool, k)
        tests = [c.test for c in v.cells if c.test is not None]
        if tests:
            found["test"] = stats.prevalence(tests[0].y_true, k)
        break
    return found


def _agreement(analysed: list[VariantAnalysis], prevalence: dict[str, list[float]]) -> Agreement | None:
    rows = [
        (a.variant.key, a.summaries["heldout"]["accuracy"].mean, a.test_split.accuracy)
        for a in analysed
        if a.test_split is not None and a.summaries["heldout"]["accuracy"].mean is not None
    ]
    if len(rows) < 3:
        return None
    names = [r[0] for r in rows]
    cv, test = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    rho = None
    if np.ptp(cv) > 0 and np.ptp(test) > 0:
        rho = float(spearmanr(cv, test).statistic)
    flips = []
    for first, second, label in ((cv, test, "best on CV, worst on test"), (test, cv, "best on test, worst on CV")):
        best, worst = int(np.argmax(first)), int(np.argmin(second))
        if best == worst and np.ptp(first) > 0 and np.ptp(second) > 0:
            flips.append(f"{names[best]} ({label})")
    shift = None
    if "CV pool" in prevalence and "test" in prevalence:
        shift = float(0.5 * np.abs(np.array(prevalence["CV pool"]) - np.array(prevalence["test"])).sum())
    return Agreement(rho, float(np.mean(test - cv)), flips, shift)
