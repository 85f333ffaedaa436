"""Numbers the report states: summaries, paired comparisons with the reference, test-split tests, ranks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import accuracy_score

from octbench import stats
from octbench.metrics import SCALARS
from octbench.report.collect import Results, VariantResults

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


@dataclass
class Comparison:
    test: stats.PairedTest
    p_t_holm: float
    p_wilcoxon: float
    p_wilcoxon_holm: float

    @property
    def mark(self) -> str:
        """'better' / 'worse' when the Holm-adjusted corrected t-test rejects equality at 5%, else ''."""
        if self.p_t_holm >= ALPHA:
            return ""
        return "better" if self.test.mean_difference > 0 else "worse"


@dataclass
class TestSplitResult:
    accuracy: float
    accuracy_ci: tuple[float, float]
    auc: float | None
    auc_ci: tuple[float, float] | None
    mcnemar: stats.McNemar | None = None
    mcnemar_holm: float | None = None


@dataclass
class VariantAnalysis:
    variant: VariantResults
    summaries: dict[str, dict[str, stats.Summary]]
    timing: dict[str, stats.Summary]
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    test_split: TestSplitResult | None = None


@dataclass
class Analysis:
    metric: str
    variants: list[VariantAnalysis]
    reference: VariantResults | None
    test_train_ratio: float
    friedman: stats.Friedman | None
    friedman_names: list[str]


def _values(variant: VariantResults, split: str, metric: str) -> dict[tuple[int, int], float]:
    return {
        (c.seed, c.fold): c.metrics[split][metric]
        for c in variant.cells
        if split in c.metrics and c.metrics[split].get(metric) is not None
    }


def _ensemble(variant: VariantResults) -> tuple[np.ndarray, np.ndarray] | None:
    """(y_true, mean probabilities of the variant's fold models) on the official test split."""
    tests = [c.test for c in variant.cells if c.test is not None]
    if not tests:
        return None
    return tests[0]["y_true"], np.mean([t["probs"] for t in tests], axis=0)


def analyse(results: Results, metric: str = "accuracy") -> Analysis:
    analysed = [
        VariantAnalysis(
            variant=v,
            summaries={
                split: {m: stats.summary(list(_values(v, split, m).values())) for m in SCALARS}
                for split in ("heldout", "test")
            },
            timing={k: stats.summary([c.timings.get(k) for c in v.cells]) for k in TIMINGS},
        )
        for v in results.variants
    ]
    reference = results.reference
    ratios = [
        c.counts["heldout"] / (c.counts["train"] + c.counts["inner_val"])
        for v in results.variants
        for c in v.cells
        if c.counts.get("heldout")
    ]
    ratio = float(np.mean(ratios)) if ratios else 0.25
    if reference is not None:
        _paired_comparisons(analysed, reference, ratio)
        _test_split(analysed, reference)
    friedman, names = _friedman(results, metric)
    return Analysis(metric, analysed, reference, ratio, friedman, names)


def _paired_comparisons(analysed: list[VariantAnalysis], reference: VariantResults, ratio: float) -> None:
    others = [a for a in analysed if a.variant is not reference]
    for metric in SCALARS:
        base = _values(reference, "heldout", metric)
        found = []
        for a in others:
            mine = _values(a.variant, "heldout", metric)
            common = sorted(set(base) & set(mine))
            if len(common) < 2:
                continue
            differences = [mine[k] - base[k] for k in common]
            found.append((a, stats.corrected_ttest(differences, ratio), stats.wilcoxon(differences)))
        t_holm = stats.holm([t.p_value for _, t, _ in found])
        w_holm = stats.holm([w for _, _, w in found])
        for (a, t, w), th, wh in zip(found, t_holm, w_holm, strict=True):
            a.comparisons[metric] = Comparison(t, th, w, wh)


def _test_split(analysed: list[VariantAnalysis], reference: VariantResults) -> None:
    base = _ensemble(reference)
    with_mcnemar = []
    for a in analysed:
        ensemble = _ensemble(a.variant)
        if ensemble is None:
            continue
        y, probs = ensemble
        predictions = probs.argmax(1)
        both = len(np.unique(y)) > 1
        a.test_split = TestSplitResult(
            accuracy=float(accuracy_score(y, predictions)),
            accuracy_ci=stats.bootstrap_ci(stats.weighted_accuracy, y, probs),
            auc=stats.macro_auc(y, probs) if both else None,
            auc_ci=stats.bootstrap_ci(stats.weighted_macro_auc, y, probs) if both else None,
        )
        if base is not None and a.variant is not reference and len(base[0]) == len(y):
            a.test_split.mcnemar = stats.mcnemar(predictions == y, base[1].argmax(1) == base[0])
            with_mcnemar.append(a)
    for a, p in zip(with_mcnemar, stats.holm([a.test_split.mcnemar.p_value for a in with_mcnemar]), strict=True):
        a.test_split.mcnemar_holm = p


def _friedman(results: Results, metric: str) -> tuple[stats.Friedman | None, list[str]]:
    variants = [v for v in results.variants if v.cells]
    if len(variants) < 3:
        return None, []
    per_variant = [_values(v, "heldout", metric) for v in variants]
    blocks = sorted(set.intersection(*(set(p) for p in per_variant)))
    if len(blocks) < 2:
        return None, []
    scores = np.array([[p[b] for p in per_variant] for b in blocks])
    if np.all(scores == scores[:, :1]):
        return None, []
    return stats.friedman(scores), [v.key for v in variants]
