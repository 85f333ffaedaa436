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
from scipy.stats import norm, spearmanr

from octbench import stats
from octbench.cell.metrics import SCALARS
from octbench.errors import OctbenchError
from octbench.report.collect import Results, VariantResults
from octbench.report.testsplit import Clinical, Headline, clinical, compare_on_test_split, resolve_positive
from octbench.stats import ALPHA

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
    """Do CV and the test split tell the same story? Like is compared with like: each variant's fold models scored
    on their held-out folds (CV accuracy) against the same fold models scored on the test split (their mean test
    accuracy), and the verdicts each side gives against the reference.

    They *disagree* only on evidence beyond noise: a variant significantly better than the reference on one side and
    significantly worse on the other (``conflicts``), or a rank correlation whose 95% interval lies below zero.
    A low correlation between variants whose differences are all within noise is not evidence of anything."""

    spearman: float | None
    spearman_ci: tuple[float, float] | None
    mean_gap: float
    conflicts: list[str]
    prevalence_shift: float | None
    variants: int = 0

    @property
    def disagree(self) -> bool:
        return bool(self.conflicts) or (self.spearman_ci is not None and self.spearman_ci[1] < 0)

    @property
    def shift_worth_naming(self) -> bool:
        """A class-mix difference large enough to say (a total variation of at least one point)."""
        return self.prevalence_shift is not None and self.prevalence_shift >= 0.01


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
    comparisons: int = 0  # variants compared with the reference: the family Holm adjusts over, per metric
    problems: list[str] = field(default_factory=list)
    metric_names: list[str] = field(default_factory=list)
    higher_is_better: dict[str, bool] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return self.options.metric

    def odd_ensembles(self) -> dict[str, int]:
        """Variants whose test-split ensemble holds another number of fold models than most do (a variant with failed
        cells), with that number: where such ensembles are compared, the page and the exports say so."""
        sizes = {a.variant.key: a.test_split.models for a in self.variants if a.test_split is not None}
        counts = list(sizes.values())
        usual = max(sorted(set(counts), reverse=True), key=counts.count) if counts else 0
        return {key: models for key, models in sizes.items() if models != usual}

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


def metric_range(metric: str) -> tuple[float, float] | None:
    """The range of one of octbench's own metrics (all between 0 and 1); a plugin's metric declares none."""
    return (0.0, 1.0) if metric in SCALARS else None


def difference_range(metric: str) -> tuple[float, float] | None:
    found = metric_range(metric)
    return None if found is None else (found[0] - found[1], found[1] - found[0])


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
                    m: stats.summary(
                        list(_values(v, "heldout", m).values()), test_train_ratio=ratio, bounds=metric_range(m)
                    )
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


def first_holm_level(comparisons: int) -> float:
    """The level Holm's first (hardest) step tests at: ALPHA over the number of variants compared. A design's
    detectable difference is stated at this level, the one the marks need to clear, not at ALPHA."""
    return ALPHA / max(comparisons, 1)


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
            found.append(
                (
                    a,
                    stats.corrected_ttest(d, analysis.test_train_ratio, bounds=difference_range(metric)),
                    stats.bayesian_correlated_ttest(d, analysis.test_train_ratio, options.rope),
                    float(d.std(ddof=1)),
                )
            )
        adjusted = stats.holm([t.p_value for _, t, *_ in found])
        higher = analysis.higher_is_better.get(metric, True)
        level = first_holm_level(len(found))
        for (a, t, bayes, std), p in zip(found, adjusted, strict=True):
            detectable = stats.detectable_difference(std, t.n, analysis.test_train_ratio, alpha=level, power=POWER)
            a.comparisons[metric] = Comparison(t, p, bayes, detectable, std, higher)
    analysis.comparisons = len(others)
    analysis.advice = _advice(analysis, options)


def _advice(analysis: Analysis, options: Options) -> str:
    """A sentence on what this design could not detect, and what would help, for the compared metric."""
    found = [a.comparisons[options.metric] for a in analysis.variants if options.metric in a.comparisons]
    if not found:
        return ""
    std = float(np.median([c.std for c in found]))
    level = first_holm_level(len(found))
    detectable = stats.detectable_difference(std, found[0].test.n, analysis.test_train_ratio, alpha=level)
    if detectable is None or detectable <= options.rope:
        return ""
    design = f"{analysis.folds} folds × {analysis.seeds} seed{'s' if analysis.seeds > 1 else ''}"
    where = (
        f"80% power at Holm's first step, α = {ALPHA:g}/{len(found)}, the level a ▲/▼ must clear first"
        if len(found) > 1
        else f"80% power at α = {ALPHA:g}"
    )
    metric = options.metric.replace("_", " ")
    span = metric_range(options.metric)
    if span is not None and detectable >= span[1] - span[0]:
        found_text = (
            f"cannot reliably detect any difference in {metric}: the detectable one ({detectable:.3f}) "
            f"exceeds the metric's whole range ({where})"
        )
    else:
        found_text = (
            f"can only reliably detect differences in {metric} of about {detectable:.3f} or more ({where}), larger "
            f"than the ±{options.rope:g} that counts as practically equivalent"
        )
    text = f"At the typical spread of paired differences here (SD {std:.3f}), {design} {found_text}."
    seeds = stats.seeds_to_detect(std, analysis.folds, analysis.test_train_ratio, options.rope, alpha=level)
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


def spearman_interval(rho: float, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Fisher-z interval of a Spearman correlation, with Fieller, Hartley & Pearson's (1957) standard error
    sqrt(1.06 / (n - 3)); None below four variants, where no interval is informative."""
    if n < 4:
        return None
    z = float(np.arctanh(np.clip(rho, -0.999999, 0.999999)))
    half = float(norm.ppf(0.5 + confidence / 2) * np.sqrt(1.06 / (n - 3)))
    return float(np.tanh(z - half)), float(np.tanh(z + half))


def _agreement(analysed: list[VariantAnalysis], prevalence: dict[str, list[float]]) -> Agreement | None:
    rows = [
        (a, a.summaries["heldout"]["accuracy"].mean, a.summaries["test"]["accuracy"].mean)
        for a in analysed
        if a.summaries["heldout"]["accuracy"].mean is not None and a.summaries["test"]["accuracy"].mean is not None
    ]
    if len(rows) < 3:
        return None
    cv, test = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    rho = interval = None
    if np.ptp(cv) > 0 and np.ptp(test) > 0:
        rho = float(spearmanr(cv, test).statistic)
        interval = spearman_interval(rho, len(rows))
    conflicts = []
    for a, _, _ in rows:
        comparison = a.comparisons.get("accuracy")
        versus = a.test_split.versus if a.test_split is not None else None
        on_cv, on_test = comparison.mark if comparison else "", versus.accuracy_mark if versus else ""
        if {on_cv, on_test} == {"better", "worse"}:
            conflicts.append(f"{a.variant.key} ({on_cv} on CV, {on_test} on the test split)")
    shift = None
    if "CV pool" in prevalence and "test" in prevalence:
        shift = float(0.5 * np.abs(np.array(prevalence["CV pool"]) - np.array(prevalence["test"])).sum())
    return Agreement(rho, interval, float(np.mean(test - cv)), conflicts, shift, len(rows))
