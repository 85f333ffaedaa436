"""The HTML report: context from the results and their analysis, rendered with Jinja2 (autoescaped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from sklearn.metrics import confusion_matrix

from octbench.plugins import PluginHost
from octbench.report import plots
from octbench.report.analysis import ALPHA, Analysis
from octbench.report.collect import Results
from octbench.report.testsplit import headline_predictions

LEADERBOARD = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced acc."),
    ("f1_macro", "Macro F1"),
    ("auc_macro", "Macro AUC"),
)
STAGES = ("load", "preprocess", "resample", "to_device", "train", "validate", "evaluate")


def _figures(results: Results, analysis: Analysis) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Suite-wide figures, and per-variant figures keyed by variant key; a figure that cannot be drawn from what is
    stored is left out, and the page says which and why (``Analysis.problems``)."""
    names = results.class_names
    per_variant: dict[str, dict[str, str]] = {}
    for a in analysis.variants:
        v = a.variant
        if not v.cells:
            continue
        figures = {}
        found = headline_predictions(a)
        if found is not None:
            y, scores, label = found
            matrix = confusion_matrix(y, scores.predicted, labels=list(range(len(names))))
            figures["confusion"] = analysis.attempt(
                f"confusion matrix of {v.key}", plots.confusion, matrix, names, label
            )
            if len(np.unique(y)) > 1:
                figures["roc"] = analysis.attempt(
                    f"ROC of {v.key}", plots.roc, y, scores.log_odds, names, f"ROC, {label}", analysis.positive
                )
        histories = [c.curves for c in v.cells if c.curves]
        if histories:
            figures["curves"] = analysis.attempt(f"training curves of {v.key}", plots.training_curves, histories, v.key)
        per_variant[v.key] = {k: f for k, f in figures.items() if f}

    done = [a for a in analysis.variants if a.variant.cells]
    suite_wide: dict[str, str] = {}
    if done:
        keys = [a.variant.key for a in done]
        suite_wide["spread"] = analysis.attempt(
            "fold spread",
            plots.fold_spread,
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
        suite_wide["throughput"] = analysis.attempt(
            "throughput figure",
            plots.throughput,
            keys,
            [a.timing["train_images_per_s"].mean or 0 for a in done],
            [a.timing["infer_images_per_s"].mean or 0 for a in done],
            {s: [a.timing[s].mean or 0 for a in done] for s in STAGES},
        )
        calibrated = [a for a in done if a.clinical is not None]
        if calibrated:
            suite_wide["reliability"] = analysis.attempt(
                "reliability diagram",
                plots.reliability,
                {
                    a.variant.key: (
                        a.clinical.reliability.confidence,
                        a.clinical.reliability.observed,
                        a.clinical.reliability.counts,
                    )
                    for a in calibrated
                },
                calibrated[0].clinical.reliability.what,
            )
    rows = [
        (a.variant.key, c.test.mean_difference, c.test.low, c.test.high, c.mark)
        for a in done
        if (c := a.comparisons.get(analysis.metric))
    ]
    if rows and analysis.reference is not None:
        suite_wide["effects"] = analysis.attempt(
            "effects figure", plots.effects, rows, analysis.metric, analysis.reference.key
        )
    return {k: f for k, f in suite_wide.items() if f}, per_variant


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
        "positive": analysis.positive,
        "alpha": ALPHA,
        "settings": _settings(results),
        "sections": _sections(results, analysis),
    }


def _sections(results: Results, analysis: Analysis) -> list[tuple[str, str]]:
    """(title, HTML) of every report-section plugin: installed ones, and those in the plugin files the run named."""
    paths = [p for run in results.runs for p in run.provenance.get("plugin_paths", []) if Path(p).exists()]
    host = analysis.attempt("report-section plugins", PluginHost.load, paths)
    if host is None:
        return []
    found = []
    for section in host.instances("report-section"):
        html = analysis.attempt(f"report section '{section.name}'", section.render, results, analysis)
        if html is not None:
            found.append((section.title or section.name, Markup(html)))
    return found


def _settings(results: Results) -> list[str]:
    """How the cells ran, counted: precision, memory layout and stack size (stores of schema 2 on)."""
    counts: dict[str, int] = {}
    for v in results.variants:
        for c in v.cells:
            if c.settings:
                s = c.settings
                label = (
                    f"{s.get('precision', '?')}{', channels-last' if s.get('channels_last') else ''}, "
                    f"stacked {s.get('stack_size', 1)}"
                )
                counts[label] = counts.get(label, 0) + 1
    return [f"{n} cell{'s' if n > 1 else ''}: {label}" for label, n in sorted(counts.items())]


def environment() -> Environment:
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
    env.filters["signed"] = lambda v, d=3: "–" if v is None else f"{v:+.{d}f}"
    env.filters["interval"] = lambda pair, d=3, sign="": (
        ""
        if pair is None or pair[0] is None or not np.isfinite(pair[0])
        else f"[{pair[0]:{sign}.{d}f}, {pair[1]:{sign}.{d}f}]"
    )
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.0f}%"
    return env


def render_html(results: Results, analysis: Analysis) -> str:
    return environment().get_template("report.html.j2").render(**build_context(results, analysis))
