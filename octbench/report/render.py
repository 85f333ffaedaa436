"""The HTML report: context from the results and their analysis, rendered with Jinja2 (autoescaped)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from octbench.report import plots
from octbench.report.analysis import Analysis
from octbench.report.collect import Results

LEADERBOARD = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced acc."),
    ("f1_macro", "Macro F1"),
    ("auc_macro", "Macro AUC"),
)
STAGES = ("load", "preprocess", "resample", "to_device", "train", "validate", "evaluate")


def _figures(results: Results, analysis: Analysis) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Suite-wide figures, and per-variant figures keyed by variant key."""
    split = "test" if results.has_test else "heldout"
    names = results.class_names
    per_variant: dict[str, dict[str, str]] = {}
    for v in results.variants:
        if not v.cells:
            continue
        figures = {}
        matrices = [c.confusion[split] for c in v.cells if split in c.confusion]
        if matrices:
            figures["confusion"] = plots.confusion(
                np.sum(matrices, axis=0), names, f"{split} split, {len(matrices)} cells summed"
            )
        per_class: dict[int, list] = defaultdict(list)
        for c in v.cells:
            for cls, fpr, tpr, auc in c.roc.get(split, []):
                per_class[cls].append((fpr, tpr, auc))
        if per_class:
            figures["roc"] = plots.roc(per_class, names, f"ROC, {split} split")
        histories = [c.curves for c in v.cells if c.curves]
        if histories:
            figures["curves"] = plots.training_curves(histories, v.key)
        per_variant[v.key] = figures

    done = [a for a in analysis.variants if a.variant.cells]
    suite_wide: dict[str, str] = {}
    if done:
        keys = [a.variant.key for a in done]
        suite_wide["spread"] = plots.fold_spread(
            {
                a.variant.key: [
                    c.metrics["heldout"][analysis.metric]
                    for c in a.variant.cells
                    if c.metrics.get("heldout", {}).get(analysis.metric) is not None
                ]
                for a in done
            },
            analysis.metric,
        )
        suite_wide["throughput"] = plots.throughput(
            keys,
            [a.timing["train_images_per_s"].mean or 0 for a in done],
            [a.timing["infer_images_per_s"].mean or 0 for a in done],
            {s: [a.timing[s].mean or 0 for a in done] for s in STAGES},
        )
    rows = [
        (a.variant.key, c.test.mean_difference, c.test.low, c.test.high, c.mark)
        for a in done
        if (c := a.comparisons.get(analysis.metric))
    ]
    if rows and analysis.reference is not None:
        suite_wide["effects"] = plots.effects(rows, analysis.metric, analysis.reference.key)
    if analysis.friedman is not None:
        suite_wide["cd"] = plots.critical_difference(
            analysis.friedman_names, analysis.friedman.average_ranks, analysis.friedman.critical_difference
        )
    return suite_wide, per_variant


def build_context(results: Results, analysis: Analysis) -> dict[str, Any]:
    suite_wide, per_variant = _figures(results, analysis)
    first = results.runs[0]
    totals = {
        "planned": sum(v.planned for v in results.variants),
        "done": sum(len(v.cells) for v in results.variants),
        "failed": sum(len(v.failed) for v in results.variants),
        "pending": sum(v.pending for v in results.variants),
    }
    return {
        "title": " + ".join(r.label for r in results.runs),
        "runs": results.runs,
        "first": first,
        "quick": any(r.row["quick"] for r in results.runs),
        "dataset": results.dataset,
        "class_names": results.class_names,
        "analysis": analysis,
        "variants": [
            {"a": a, "v": a.variant, "anchor": f"v{i}", "figures": per_variant.get(a.variant.key, {})}
            for i, a in enumerate(analysis.variants)
        ],
        "figures": suite_wide,
        "leaderboard_columns": LEADERBOARD,
        "has_test": results.has_test,
        "devices": sorted({r.provenance["device"] for r in results.runs}),
        "stages": STAGES,
        "totals": totals,
        "reference": analysis.reference,
    }


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("octbench.report", "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pm"] = lambda s, d=3: "–" if s.mean is None else f"{s.mean:.{d}f} ± {s.std:.{d}f}"
    env.filters["ci"] = lambda s, d=3: "" if s.low is None else f"[{s.low:.{d}f}, {s.high:.{d}f}]"
    env.filters["num"] = lambda v, d=0: "–" if v is None else f"{v:,.{d}f}"
    env.filters["p"] = lambda p: "–" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")
    env.filters["signed"] = lambda v, d=3: f"{v:+.{d}f}"
    return env


def render_html(results: Results, analysis: Analysis) -> str:
    return _environment().get_template("report.html.j2").render(**build_context(results, analysis))
