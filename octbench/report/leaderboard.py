"""The leaderboard's row model: one typed record per variant, read by the page, the Markdown and the LaTeX table,
and flattened (``Row.flat``) only for the CSV and JSON exports, whose flat column names stay as they always were."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from octbench.report import tuned
from octbench.report.analysis import Analysis, Comparison, VariantAnalysis
from octbench.report.collect import Results, VariantResults
from octbench.report.testsplit import Clinical, Headline, Versus
from octbench.report.variants import changes_from, parameters
from octbench.stats import Summary

#: the CV columns every leaderboard shows (metric, label); the JSON and CSV hold every metric
COLUMNS = (
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced acc."),
    ("f1_macro", "macro F1"),
    ("auc_macro", "macro AUC"),
)
UNEQUAL = "‡"  # marks a variant compared with the reference at another tuning budget


@dataclass(frozen=True)
class Row:
    """A variant's line: its CV summaries and verdicts, its test-split ensemble and verdicts against the reference's,
    its clinical rates, and what it changes from the reference."""

    analysis: VariantAnalysis
    anchor: str
    parameters: int | None
    changes: list[str]
    budget_note: str
    notes: list[str]

    @property
    def variant(self) -> VariantResults:
        return self.analysis.variant

    @property
    def key(self) -> str:
        return self.variant.key

    @property
    def reference(self) -> bool:
        return self.variant.role == "baseline"

    @property
    def cv(self) -> dict[str, Summary]:
        """Each metric's mean ± SD over the fold models on their held-out folds."""
        return self.analysis.summaries["heldout"]

    @property
    def verdicts(self) -> dict[str, Comparison]:
        """Each metric's paired CV comparison with the reference (none for the reference itself)."""
        return self.analysis.comparisons

    @property
    def test(self) -> Headline | None:
        """The ensemble of the fold models on the official test split."""
        return self.analysis.test_split

    @property
    def versus(self) -> Versus | None:
        """The test-split ensemble against the reference's, image by image."""
        return self.test.versus if self.test is not None else None

    @property
    def clinical(self) -> Clinical | None:
        return self.analysis.clinical

    def flat(self, analysis: Analysis) -> dict[str, Any]:
        """The CSV and JSON row: the same keys as every earlier version wrote."""
        v = self.variant
        row: dict[str, Any] = {
            "variant": v.key,
            "run": v.run,
            "name": v.name,
            "reference": self.reference,
            "cells": len(v.cells),
            "failed": len(v.failed),
            "planned": v.planned,
        }
        for split in ("heldout", "test"):
            for metric in analysis.metric_names:
                s = self.analysis.summaries[split][metric]
                row[f"{split}_{metric}_mean"], row[f"{split}_{metric}_std"] = s.mean, s.std
        row.update(_compared(analysis.metric, self.verdicts.get(analysis.metric), analysis.options.rope))
        for metric in analysis.metric_names:  # every metric's verdict, raw and Holm-adjusted
            row.update(_verdict(metric, self.verdicts.get(metric)))
        row.update(_test_columns(self.test, self.versus, analysis.class_names))
        row.update(_clinical_columns(self.clinical, analysis))
        for key in ("train_images_per_s", "infer_images_per_s"):
            row[key], row[f"{key}_std"] = self.analysis.timing[key].mean, self.analysis.timing[key].std
        row["parameters"] = self.parameters
        row["changes"] = "; ".join(self.changes)
        row["budget_note"] = self.budget_note
        row["equal_budget"] = not self.budget_note
        return row


def _compared(metric: str, c: Comparison | None, rope: float) -> dict[str, Any]:
    """The compared metric's verdict under its original column names."""
    return {
        f"delta_{metric}": c.test.mean_difference if c else None,
        "delta_low": c.test.low if c else None,
        "delta_high": c.test.high if c else None,
        "p_corrected_t": c.test.p_value if c else None,
        "p_corrected_t_holm": c.p_holm if c else None,
        "p_worse": c.bayes.p_worse if c else None,
        "p_equivalent": c.bayes.p_equivalent if c else None,
        "p_better": c.bayes.p_better if c else None,
        "rope": rope,
        "detectable_delta": c.detectable if c else None,
    }


def _verdict(metric: str, c: Comparison | None) -> dict[str, Any]:
    row = {
        f"delta_{metric}": c.test.mean_difference if c else None,
        f"delta_{metric}_low": c.test.low if c else None,
        f"delta_{metric}_high": c.test.high if c else None,
        f"p_{metric}_corrected_t": c.test.p_value if c else None,
        f"p_{metric}_corrected_t_holm": c.p_holm if c else None,
    }
    for side in ("worse", "equivalent", "better"):
        row[f"p_{metric}_{side}"] = getattr(c.bayes, f"p_{side}") if c else None
    row[f"detectable_delta_{metric}"] = c.detectable if c else None
    return row


def _test_columns(t: Headline | None, vs: Versus | None, class_names: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"test_ensemble_accuracy": t.accuracy if t else None}
    row["test_ensemble_accuracy_low"], row["test_ensemble_accuracy_high"] = t.accuracy_ci if t else (None, None)
    row["test_ensemble_auc"] = t.auc if t else None
    row["test_ensemble_auc_low"], row["test_ensemble_auc_high"] = t.auc_ci if t and t.auc_ci else (None, None)
    row["test_delta_accuracy"] = vs.accuracy_delta if vs else None
    row["test_delta_accuracy_low"], row["test_delta_accuracy_high"] = vs.accuracy_ci if vs else (None, None)
    row["mcnemar_only_this"] = vs.mcnemar.only_first_correct if vs else None
    row["mcnemar_only_reference"] = vs.mcnemar.only_second_correct if vs else None
    row["p_mcnemar"] = vs.mcnemar.p_value if vs else None
    row["p_mcnemar_holm"] = vs.mcnemar_holm if vs else None
    row["test_delta_auc"] = vs.auc_delta if vs else None
    row["test_delta_auc_low"], row["test_delta_auc_high"] = vs.auc_ci if vs and vs.auc_ci else (None, None)
    row["test_auc_method"] = vs.auc_method if vs else None
    row["p_auc"] = vs.auc_p if vs else None
    row["p_auc_holm"] = vs.auc_holm if vs else None
    row["test_detectable_accuracy"] = vs.accuracy_detectable if vs else None
    row["test_detectable_auc"] = vs.auc_detectable if vs else None
    row["test_models"] = t.models if t else None
    for cls, d in vs.per_class if vs else []:
        name = class_names[cls]
        row[f"test_delta_auc[{name}]"] = d.difference
        row[f"test_delta_auc[{name}]_low"], row[f"test_delta_auc[{name}]_high"] = d.low, d.high
        row[f"p_delong[{name}]"] = d.p_value
    return row


def _clinical_columns(k: Clinical | None, analysis: Analysis) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for r in k.rates if k else []:  # the positive class of a binary task; else each class against the rest
        prefix = "" if analysis.positive is not None else f"{analysis.class_names[r.positive]}_"
        for label in ("sensitivity", "specificity", "ppv", "npv"):
            x = getattr(r, label)
            row[f"{prefix}{label}"], row[f"{prefix}{label}_low"], row[f"{prefix}{label}_high"] = (
                (x.value, x.low, x.high) if x.n else (None, None, None)
            )
            row[f"{prefix}{label}_k"], row[f"{prefix}{label}_n"] = x.k, x.n
    row["brier"] = k.brier if k else None
    row["ece"] = k.reliability.ece if k else None
    return row


def rows(results: Results, analysis: Analysis) -> list[Row]:
    """Every variant's row, in the analysis's order."""
    notes = {r.label: r.provenance.get("notes", {}) for r in results.runs}
    return [
        Row(
            analysis=a,
            anchor=f"v{i}",
            parameters=parameters(a.variant),
            changes=changes_from(a.variant.spec, analysis.reference, results.dataset),
            budget_note=tuned.budget_note(a.variant, analysis.reference),
            notes=notes.get(a.variant.run, {}).get(a.variant.name, []),
        )
        for i, a in enumerate(analysis.variants)
    ]


def best(board: list[Row], analysis: Analysis) -> dict[str, set[str]]:
    """{column: variants holding its best value}, for the CV means of every metric (lower is better where the metric
    says so) and the test split's ensemble accuracy and AUC; ties share the mark. Columns are named as in ``flat``."""
    columns: dict[str, tuple[bool, Any]] = {
        f"heldout_{m}_mean": (analysis.higher_is_better.get(m, True), lambda r, m=m: r.cv[m].mean)
        for m in analysis.metric_names
    }
    columns["test_ensemble_accuracy"] = (True, lambda r: r.test.accuracy if r.test else None)
    columns["test_ensemble_auc"] = (True, lambda r: r.test.auc if r.test else None)
    found = {}
    for column, (higher, value_of) in columns.items():
        values = [(value, r.key) for r in board if (value := value_of(r)) is not None]
        if len(values) < 2:
            continue
        top = max(v for v, _ in values) if higher else min(v for v, _ in values)
        found[column] = {name for v, name in values if abs(v - top) < 5e-4}  # equal as printed (3 decimals)
    return found


def unequal_budget_legend(board: list[Row]) -> str:
    """What ‡ means, for the captions of the page and the exports."""
    return (
        "not compared at an equal tuning budget ("
        + "; ".join(r.budget_note.removeprefix("not equal-budget: ") for r in board if r.budget_note)
        + "): a difference mixes the technique with its search."
    )
