"""Exports for publishing: a Markdown leaderboard, CSV and JSON of the leaderboard and of every cell."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from octbench.data.files import write_atomically
from octbench.errors import OctbenchError
from octbench.report import images, tuned
from octbench.report.analysis import Analysis
from octbench.report.collect import Results
from octbench.report.summary import design
from octbench.report.variants import changes_from, parameters
from octbench.report.wording import p_text

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
        comparison = a.comparisons.get(analysis.metric)  # the compared metric under its original column names
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
        for metric in analysis.metric_names:  # every metric's verdict, raw and Holm-adjusted
            c = a.comparisons.get(metric)
            row[f"delta_{metric}"] = c.test.mean_difference if c else None
            row[f"delta_{metric}_low"], row[f"delta_{metric}_high"] = (c.test.low, c.test.high) if c else (None, None)
            row[f"p_{metric}_corrected_t"] = c.test.p_value if c else None
            row[f"p_{metric}_corrected_t_holm"] = c.p_holm if c else None
            for side in ("worse", "equivalent", "better"):
                row[f"p_{metric}_{side}"] = getattr(c.bayes, f"p_{side}") if c else None
            row[f"detectable_delta_{metric}"] = c.detectable if c else None
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
        row["test_detectable_accuracy"] = vs.accuracy_detectable if vs else None
        row["test_detectable_auc"] = vs.auc_detectable if vs else None
        row["test_models"] = t.models if t else None
        for cls, d in vs.per_class if vs else []:
            name = analysis.class_names[cls]
            row[f"test_delta_auc[{name}]"] = d.difference
            row[f"test_delta_auc[{name}]_low"], row[f"test_delta_auc[{name}]_high"] = d.low, d.high
            row[f"p_delong[{name}]"] = d.p_value
        k = a.clinical
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
        for key in ("train_images_per_s", "infer_images_per_s"):
            row[key], row[f"{key}_std"] = a.timing[key].mean, a.timing[key].std
        row["parameters"] = parameters(v)
        row["changes"] = "; ".join(changes_from(v.spec, results.reference, results.dataset))
        row["budget_note"] = tuned.budget_note(v, analysis.reference)
        row["equal_budget"] = not row["budget_note"]
        rows.append(row)
    return rows


def cell_rows(results: Results) -> list[dict[str, Any]]:
    """A row per cell and split; a tuned run adds the setting each cell's search chose (``tuned <key>``)."""
    names = results.metric_names
    searched = sorted(
        {k for v in results.variants for c in v.cells for k in c.settings.get("search", {}).get("chosen", {})}
    )
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
                        **{m: metrics.get(m) for m in names},
                        **{f"seconds_{k}": c.timings.get(k) for k in ("preprocess", "resample", "train", "evaluate")},
                        "train_images_per_s": c.timings.get("train_images_per_s"),
                        **{f"tuned {k}": c.settings.get("search", {}).get("chosen", {}).get(k) for k in searched},
                    }
                )
    return rows


def best_keys(rows: list[dict[str, Any]], analysis: Analysis) -> dict[str, set[str]]:
    """{column: variants holding its best value}, for the CV means of every metric (lower is better where the metric
    says so) and the test split's ensemble accuracy and AUC; ties share the mark."""
    columns = {f"heldout_{m}_mean": analysis.higher_is_better.get(m, True) for m in analysis.metric_names}
    columns.update({"test_ensemble_accuracy": True, "test_ensemble_auc": True})
    found = {}
    for column, higher in columns.items():
        values = [(r[column], r["variant"]) for r in rows if r.get(column) is not None]
        if len(values) < 2:
            continue
        best = max(v for v, _ in values) if higher else min(v for v, _ in values)
        found[column] = {name for v, name in values if abs(v - best) < 5e-4}  # equal as printed (3 decimals)
    return found


def _pm(mean: float | None, std: float | None) -> str:
    return "–" if mean is None else f"{mean:.3f} ± {std:.3f}"


def _significant(p: float | None) -> str:
    return " †" if p is not None and p < 0.05 else ""


def _bold(text: str, best: bool) -> str:
    return f"**{text}**" if best and text != "–" else text


def _raw_holm(p: float | None, holm: float | None) -> str:
    return "–" if p is None else f"{p_text(p)} ({p_text(holm)})"


def _delta(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:+.3f} [{row[f'{key}_low']:+.3f}, {row[f'{key}_high']:+.3f}]"


def markdown(results: Results, analysis: Analysis) -> str:
    """The summary, the leaderboard (every CV metric, the test ensembles with intervals, best in bold, † where the
    Holm-adjusted test against the reference rejects equality) and the verdicts with raw and adjusted p."""

    has_test = results.has_test
    reference = analysis.reference.key if analysis.reference else None
    rows = leaderboard_rows(results, analysis)
    best = best_keys(rows, analysis)
    odd = analysis.odd_ensembles()
    header = ["Variant", *[label for _, label in MARKDOWN_COLUMNS]]
    if has_test:
        header += ["Test accuracy (ensemble) [95% CI]", "Test AUC (ensemble) [95% CI]"]
    header += ["Changes vs reference"] if reference else []
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row["variant"] + (" (reference)" if row["reference"] else "") + f" {UNEQUAL}" * (not row["equal_budget"])
        ]
        for m, _ in MARKDOWN_COLUMNS:
            text = _bold(
                _pm(row[f"heldout_{m}_mean"], row[f"heldout_{m}_std"]),
                row["variant"] in best.get(f"heldout_{m}_mean", ()),
            )
            cells.append(text + _significant(row.get(f"p_{m}_corrected_t_holm")))
        if has_test:
            for key, p in (("test_ensemble_accuracy", "p_mcnemar_holm"), ("test_ensemble_auc", "p_auc_holm")):
                text = _bold(_value(row[key]), row["variant"] in best.get(key, ()))
                interval = (
                    "" if row.get(f"{key}_low") is None else f" [{row[f'{key}_low']:.3f}, {row[f'{key}_high']:.3f}]"
                )
                size = f" ({odd[row['variant']]} fold models)" if row["variant"] in odd else ""
                cells.append(text + interval + size + _significant(row.get(p)))
        if reference:
            cells.append("reference" if row["reference"] else (row["changes"] or "none"))
        lines.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
    text = "\n".join(lines) + "\n\n" + _caption(results, analysis) + "\n"
    if reference:
        text += "\n" + _verdicts(rows, analysis, has_test)
    return md_cell(images.summary_with(results, analysis, images.selection(results, analysis))) + "\n\n" + text


def _verdicts(rows: list[dict[str, Any]], analysis: Analysis, has_test: bool) -> str:
    metric = analysis.metric
    header = [
        "Variant",
        f"CV Δ {metric.replace('_', ' ')} [corrected 95% CI]",
        "corrected t p raw (Holm)",
        "P(worse/≈/better)",
        "detectable Δ",
    ]
    if has_test:
        header += [
            "test Δ accuracy [CI]",
            "McNemar only this / only ref.",
            "McNemar p raw (Holm)",
            "test Δ AUC [CI]",
            "AUC p raw (Holm)",
        ]
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if row["reference"]:
            continue
        delta = row[f"delta_{metric}"]
        cells = [row["variant"]]
        if delta is None:
            cells += ["–"] * 4
        else:
            cells += [
                f"{delta:+.3f} [{row['delta_low']:+.3f}, {row['delta_high']:+.3f}]",
                _raw_holm(row["p_corrected_t"], row["p_corrected_t_holm"]),
                " / ".join(f"{100 * row[k]:.0f}%" for k in ("p_worse", "p_equivalent", "p_better")),
                "–" if row["detectable_delta"] is None else f"±{row['detectable_delta']:.3f}",
            ]
        if has_test:
            if row["test_delta_accuracy"] is None:
                cells += ["–"] * 5
            else:
                auc = row["test_delta_auc"]
                cells += [
                    _delta(row, "test_delta_accuracy"),
                    f"{row['mcnemar_only_this']} / {row['mcnemar_only_reference']}",
                    _raw_holm(row["p_mcnemar"], row["p_mcnemar_holm"]),
                    "–"
                    if auc is None
                    else f"{auc:+.3f} [{row['test_delta_auc_low']:+.3f}, {row['test_delta_auc_high']:+.3f}]",
                    "–"
                    if row["p_auc"] is None
                    else f"{_raw_holm(row['p_auc'], row['p_auc_holm'])} {row['test_auc_method']}",
                ]
        lines.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _caption(results: Results, analysis: Analysis) -> str:

    dataset = results.dataset
    has_test = results.has_test
    reference = analysis.reference.key if analysis.reference else None
    text = (
        f"{dataset['name']}, {design(results, analysis)}. CV: mean ± SD of the fold models on their held-out folds"
        + ("; test: the fold models' ensemble on the official test split, bootstrap 95% CI" if has_test else "")
        + ". Bold: best in the column."
    )
    if reference:
        text += (
            f" †: differs from {reference} at Holm-adjusted p < 0.05 (CV: corrected resampled t-test, Nadeau & "
            "Bengio, on paired folds"
            + ("; test: McNemar for accuracy, DeLong or a paired bootstrap for AUC" if has_test else "")
            + "; Holm adjusts over the variants compared with the reference, separately in each column"
            + f"). P(worse/≈/better): Bayesian correlated t-test, ROPE ±{analysis.options.rope:g}."
        )
    unequal = [a.variant for a in analysis.variants if tuned.budget_note(a.variant, analysis.reference)]
    if unequal:
        text += f" {UNEQUAL}: {unequal_budget_legend(analysis)}"
    if any(r.row["quick"] for r in results.runs):
        text += " Made with `--quick`: a first look, not results to publish."
    return md_cell(text)


UNEQUAL = "‡"  # marks a variant compared with the reference at another tuning budget


def unequal_budget_legend(analysis: Analysis) -> str:
    """What ‡ means, for the captions of the page and the exports."""
    notes = [tuned.budget_note(a.variant, analysis.reference) for a in analysis.variants]
    return (
        "not compared at an equal tuning budget ("
        + "; ".join(n.removeprefix("not equal-budget: ") for n in notes if n)
        + "): a difference mixes the technique with its search."
    )


def _value(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


_OPENS_HTML = re.compile(r"<(?=[A-Za-z/!?])|&(?=#?\w+;)")


def md_cell(text: str) -> str:
    """A Markdown table cell, one line: pipes escaped, and HTML in names shown as text. Only a ``<`` that could open
    a tag and an ``&`` that could start an entity are written as entities (every Markdown renderer honours those;
    Python-Markdown ignores a backslash before ``<``), so ordinary text such as "p < 0.05" stays as written."""
    escaped = _OPENS_HTML.sub(lambda m: "&lt;" if m.group(0) == "<" else "&amp;", str(text))
    return escaped.replace("|", "\\|").replace("\n", " ")


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
        fields = list(dict.fromkeys(key for row in rows for key in row))  # every row's columns, first seen first
        writer = csv.DictWriter(buffer, fieldnames=fields)
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


def write_predictions(results: Results, path: Path) -> list[Path]:
    """Every stored per-image prediction as CSV (``octbench.report.compare.prediction_rows``)."""
    from octbench.report.compare import prediction_rows

    rows = prediction_rows(results)
    if not rows:
        raise OctbenchError(f"no per-image predictions are stored under {path.parent}: nothing to export.")
    written(path, csv_text(rows).encode())
    return [path]


def to_json(results: Results, analysis: Analysis) -> str:
    from octbench.report.compare import confusions, rocs

    shown = images.selection(results, analysis)
    payload = {
        "summary": images.summary_with(results, analysis, shown),
        "dataset": results.dataset,
        "design": {"folds": analysis.folds, "seeds": analysis.seeds},
        "metric": analysis.metric,
        "reference": analysis.reference.key if analysis.reference else None,
        "positive_class": analysis.class_names[analysis.positive] if analysis.positive is not None else None,
        "test_train_ratio": analysis.test_train_ratio,
        "prevalence": analysis.prevalence,
        "leaderboard": leaderboard_rows(results, analysis),
        "cells": cell_rows(results),
        "confusion": {k: {view: m.tolist() for view, m in v.items()} for k, v in confusions(analysis).items()},
        "roc": rocs(analysis),
        "images": shown.as_json(),
        "runs": [
            {"label": r.label, "suite": r.row["suite_name"], "quick": bool(r.row["quick"]), "provenance": r.provenance}
            for r in results.runs
        ],
    }
    return json.dumps(payload, indent=1, default=str)
