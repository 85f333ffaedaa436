"""Exports for publishing: a Markdown leaderboard, CSV and JSON of the leaderboard and of every cell."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from octbench.data.files import write_atomically
from octbench.metrics import SCALARS
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
            for metric in SCALARS:
                s = a.summaries[split][metric]
                row[f"{split}_{metric}_mean"], row[f"{split}_{metric}_std"] = s.mean, s.std
        comparison = a.comparisons.get(analysis.metric)
        row[f"delta_{analysis.metric}"] = comparison.test.mean_difference if comparison else None
        row["delta_low"], row["delta_high"] = (
            (comparison.test.low, comparison.test.high) if comparison else (None, None)
        )
        row["p_corrected_t_holm"] = comparison.p_t_holm if comparison else None
        row["p_wilcoxon_holm"] = comparison.p_wilcoxon_holm if comparison else None
        t = a.test_split
        row["test_ensemble_accuracy"] = t.accuracy if t else None
        row["test_ensemble_auc"] = t.auc if t else None
        row["p_mcnemar_holm"] = t.mcnemar_holm if t else None
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
                        **{m: metrics.get(m) for m in SCALARS},
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
        header += ["Test accuracy", "Test macro AUC"]
    if reference:
        header += [f"Δ {analysis.metric.replace('_', ' ')} vs {reference} [95% CI]", "p (Holm)"]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for row in leaderboard_rows(results, analysis):
        cells = [row["variant"] + (" (reference)" if row["reference"] else "")]
        cells += [_pm(row[f"heldout_{m}_mean"], row[f"heldout_{m}_std"]) for m, _ in MARKDOWN_COLUMNS]
        if has_test:
            cells += [
                _pm(row["test_accuracy_mean"], row["test_accuracy_std"]),
                _pm(row["test_auc_macro_mean"], row["test_auc_macro_std"]),
            ]
        if reference:
            delta = row[f"delta_{analysis.metric}"]
            cells += (
                ["–", "–"]
                if delta is None
                else [
                    f"{delta:+.3f} [{row['delta_low']:+.3f}, {row['delta_high']:+.3f}]",
                    f"{row['p_corrected_t_holm']:.3f}",
                ]
            )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    dataset = results.dataset
    quick = (
        " Made with `--quick`: a first look, not results to publish."
        if any(r.row["quick"] for r in results.runs)
        else ""
    )
    note = (
        f"{dataset['name']}, mean ± std over folds × seeds; CV on held-out folds"
        + (", test on the official test split" if has_test else "")
        + (". p: corrected resampled t-test (Nadeau & Bengio) on paired folds, Holm-adjusted." if reference else ".")
        + quick
    )
    return "\n".join(lines) + "\n\n" + note + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _csv(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue().encode()


def write_csv(results: Results, analysis: Analysis, folder: Path) -> list[Path]:
    paths = [folder / "leaderboard.csv", folder / "cells.csv"]
    write_atomically(paths[0], _csv(leaderboard_rows(results, analysis)))
    write_atomically(paths[1], _csv(cell_rows(results)))
    return paths


def to_json(results: Results, analysis: Analysis) -> str:
    payload = {
        "dataset": results.dataset,
        "metric": analysis.metric,
        "reference": analysis.reference.key if analysis.reference else None,
        "leaderboard": leaderboard_rows(results, analysis),
        "cells": cell_rows(results),
        "runs": [
            {"label": r.label, "suite": r.row["suite_name"], "quick": bool(r.row["quick"]), "provenance": r.provenance}
            for r in results.runs
        ],
    }
    return json.dumps(payload, indent=1, default=str)
