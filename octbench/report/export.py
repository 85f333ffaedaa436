"""Exports for publishing: a Markdown leaderboard, CSV and JSON of the leaderboard and of every cell."""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path
from typing import Any

from octbench.data.files import write_atomically
from octbench.errors import OctbenchError
from octbench.report.analysis import Analysis
from octbench.report.collect import Results

MARKDOWN_COLUMNS = (
    ("accuracy", "CV accuracy"),
    ("balanced_accuracy", "CV balanced acc."),
    ("f1_macro", "CV macro F1"),
    ("auc_macro", "CV macro AUC"),
)


def leaderboard_rows(results: Results, analysis: Analysis) -> list[dict[str, Any]]:
    rows = []
    for a in analysis.variants:
        v = a.variant
        row: dict[str, Any] = {
            "variant": v.key,
            "run": v.run,
            "name": v.name,
            "reference": v.role == "baseline",
            "cells": len(v.cells),
            "failed": len(v.failed),
            "planned": v.planned,
        }
        for split in ("heldout", "test"):
            for metric in analysis.metric_names:
                s = a.summaries[split][metric]
                row[f"{split}_{metric}_mean"], row[f"{split}_{metric}_std"] = s.mean, s.std
        comparison = a.comparisons.get(analysis.metric)
        row[f"delta_{analysis.metric}"] = comparison.test.mean_difference if comparison else None
        row["delta_low"], row["delta_high"] = (
            (comparison.test.low, comparison.test.high) if comparison else (None, None)
        )
        row["p_corrected_t"] = comparison.test.p_value if comparison else None
        row["p_corrected_t_holm"] = comparison.p_holm if comparison else None
        row["p_worse"] = comparison.bayes.p_worse if comparison else None
        row["p_equivalent"] = comparison.bayes.p_equivalent if comparison else None
        row["p_better"] = comparison.bayes.p_better if comparison else None
        row["rope"] = analysis.options.rope
        row["detectable_delta"] = comparison.detectable if comparison else None
        t = a.test_split
        vs = t.versus if t else None
        row["test_ensemble_accuracy"] = t.accuracy if t else None
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
        k = a.clinical
        if k is not None and analysis.positive is not None:
            for label, x in zip(
                ("sensitivity", "specificity", "ppv", "npv"),
                (k.rates[0].sensitivity, k.rates[0].specificity, k.rates[0].ppv, k.rates[0].npv),
                strict=True,
            ):
                row[label], row[f"{label}_low"], row[f"{label}_high"] = x.value, x.low, x.high
        row["brier"] = k.brier if k else None
        row["ece"] = k.reliability.ece if k else None
        row["train_images_per_s"] = a.timing["train_images_per_s"].mean
        row["infer_images_per_s"] = a.timing["infer_images_per_s"].mean
        rows.append(row)
    return rows


def cell_rows(results: Results) -> list[dict[str, Any]]:
    rows = []
    for v in results.variants:
        for c in v.cells:
            for split, metrics in sorted(c.metrics.items()):
                rows.append(
                    {
                        "variant": v.key,
                        "run": v.run,
                        "seed": c.seed,
                        "fold": c.fold,
                        "split": split,
                        **{m: metrics.get(m) for m in results.metric_names},
                        **{f"seconds_{k}": c.timings.get(k) for k in ("preprocess", "resample", "train", "evaluate")},
                        "train_images_per_s": c.timings.get("train_images_per_s"),
                    }
                )
    return rows


def _pm(mean: float | None, std: float | None) -> str:
    return "–" if mean is None else f"{mean:.3f} ± {std:.3f}"


def markdown(results: Results, analysis: Analysis) -> str:
    has_test = results.has_test
    reference = analysis.reference.key if analysis.reference else None
    header = ["Variant", *[label for _, label in MARKDOWN_COLUMNS]]
    if has_test:
        header += ["Test accuracy (ensemble)", "Test AUC (ensemble)"]
    if reference:
        header += [
            f"Δ {analysis.metric.replace('_', ' ')} vs {reference} [corrected 95% CI]",
            "p (Holm)",
            "P(worse/≈/better)",
        ]
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for row in leaderboard_rows(results, analysis):
        cells = [row["variant"] + (" (reference)" if row["reference"] else "")]
        cells += [_pm(row[f"heldout_{m}_mean"], row[f"heldout_{m}_std"]) for m, _ in MARKDOWN_COLUMNS]
        if has_test:
            cells += [_value(row["test_ensemble_accuracy"]), _value(row["test_ensemble_auc"])]
        if reference:
            delta = row[f"delta_{analysis.metric}"]
            cells += (
                ["–", "–", "–"]
                if delta is None
                else [
                    f"{delta:+.3f} [{row['delta_low']:+.3f}, {row['delta_high']:+.3f}]",
                    f"{row['p_corrected_t_holm']:.3f}",
                    " / ".join(f"{100 * row[k]:.0f}%" for k in ("p_worse", "p_equivalent", "p_better")),
                ]
            )
        lines.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
    dataset = results.dataset
    quick = (
        " Made with `--quick`: a first look, not results to publish."
        if any(r.row["quick"] for r in results.runs)
        else ""
    )
    note = (
        f"{dataset['name']}, CV: mean ± SD over {analysis.folds} folds × {analysis.seeds} seeds on held-out folds"
        + (", test: the fold models' ensemble on the official test split" if has_test else "")
        + (
            ". p: corrected resampled t-test (Nadeau & Bengio) on paired folds, Holm-adjusted; "
            f"P(worse/≈/better): Bayesian correlated t-test, ROPE ±{analysis.options.rope:g}."
            if reference
            else "."
        )
        + quick
    )
    return "\n".join(lines) + "\n\n" + note + "\n"


def _value(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def md_cell(text: str) -> str:
    """A Markdown table cell: pipes escaped, HTML in names shown as text, one line."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralised(value: Any) -> Any:
    """Text a spreadsheet would run as a formula (a variant named ``=HYPERLINK(...)``), prefixed with ``'`` (OWASP's
    advice for CSV injection); numbers are left alone."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: neutralised(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def written(path: Path, data: bytes) -> None:
    """``write_atomically``, with a failure to write (read-only folder, full disk) as a one-line error."""
    try:
        write_atomically(path, data)
    except OSError as exc:
        raise OctbenchError(f"cannot write {path}: {exc.strerror}. Write the report elsewhere with --output.") from None


def write_csv(results: Results, analysis: Analysis, folder: Path) -> list[Path]:
    paths = [folder / "leaderboard.csv", folder / "cells.csv"]
    written(paths[0], csv_text(leaderboard_rows(results, analysis)).encode())
    written(paths[1], csv_text(cell_rows(results)).encode())
    return paths


def to_json(results: Results, analysis: Analysis) -> str:
    payload = {
        "dataset": results.dataset,
        "metric": analysis.metric,
        "reference": analysis.reference.key if analysis.reference else None,
        "positive_class": analysis.class_names[analysis.positive] if analysis.positive is not None else None,
        "test_train_ratio": analysis.test_train_ratio,
        "prevalence": analysis.prevalence,
        "leaderboard": leaderboard_rows(results, analysis),
        "cells": cell_rows(results),
        "runs": [
            {"label": r.label, "suite": r.row["suite_name"], "quick": bool(r.row["quick"]), "provenance": r.provenance}
            for r in results.runs
        ],
    }
    return json.dumps(payload, indent=1, default=str)
