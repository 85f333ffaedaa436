"""The HTML report: context from the results and their analysis, rendered with Jinja2 (autoescaped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from octbench.plugins import PluginHost
from octbench.report import figures, images, tuned
from octbench.report.analysis import ALPHA, Analysis
from octbench.report.collect import Results
from octbench.report.export import best_keys, leaderboard_rows, unequal_budget_legend
from octbench.report.figures import Drawer
from octbench.report.provenance import provenance_of
from octbench.report.variants import changes_from, parameters
from octbench.report.wording import p_text

LEADERBOARD = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced acc."),
    ("f1_macro", "Macro F1"),
    ("auc_macro", "Macro AUC"),
)


def build_context(results: Results, analysis: Analysis, drawer: Drawer | None = None) -> dict[str, Any]:
    """Everything the page shows; ``drawer`` (with a folder) also writes each figure as files."""
    drawer = drawer or Drawer(analysis)
    gallery = images.safe_gallery(results, analysis)
    if drawer.folder is not None:
        drawer.written += images.write(gallery, drawer.folder)
    suite_figures, variant_figures = figures.suite_wide(results, drawer), figures.per_variant(results, drawer)
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
            {
                "a": a,
                "v": a.variant,
                "anchor": f"v{i}",
                "figures": variant_figures.get(a.variant.key, {}),
                "changes": changes_from(a.variant.spec, analysis.reference, results.dataset),
                "parameters": parameters(a.variant),
                "budget": tuned.budget_note(a.variant, analysis.reference),
                "notes": next(
                    (r.provenance.get("notes", {}) for r in results.runs if r.label == a.variant.run), {}
                ).get(a.variant.name, []),
            }
            for i, a in enumerate(analysis.variants)
        ],
        "figures": suite_figures,
        "summary": images.summary_with(results, analysis, gallery.selection),
        "best": best_keys(leaderboard_rows(results, analysis), analysis),
        "provenance": [provenance_of(run, results.variants) for run in results.runs],
        "leaderboard_columns": LEADERBOARD,
        "has_test": results.has_test,
        "devices": sorted({r.provenance["device"] for r in results.runs}),
        "stages": figures.STAGES,
        "unequal_budget": unequal_budget_legend(analysis),
        "odd_ensembles": analysis.odd_ensembles(),
        "totals": totals,
        "reference": analysis.reference,
        "positive": analysis.positive,
        "alpha": ALPHA,
        "settings": _settings(results),
        "sections": _sections(results, analysis),
        "gallery": gallery,
    }


def _sections(results: Results, analysis: Analysis) -> list[tuple[str, str]]:
    """(title, HTML) of the tuning section (where cells were tuned) and of every report-section plugin: installed
    ones, and those in the plugin files the run named."""
    found = []
    search = analysis.attempt("the tuning section", tuned.render, results)
    if search is not None:
        found.append(("Tuning", Markup(search)))
    paths = [p for run in results.runs for p in run.provenance.get("plugin_paths", []) if Path(p).exists()]
    host = analysis.attempt("report-section plugins", PluginHost.load, paths)
    if host is None:
        return found
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
    env.filters["ci"] = lambda s, d=3: (
        "" if s.low is None else f"[{s.low:.{d}f}, {s.high:.{d}f}]" + ("*" if getattr(s, "clipped", False) else "")
    )
    env.filters["num"] = lambda v, d=0: "–" if v is None else f"{v:,.{d}f}"
    env.filters["p"] = p_text
    env.filters["signed"] = lambda v, d=3: "–" if v is None else f"{v:+.{d}f}"
    env.filters["interval"] = lambda pair, d=3, sign="": (
        ""
        if pair is None or pair[0] is None or not np.isfinite(pair[0])
        else f"[{pair[0]:{sign}.{d}f}, {pair[1]:{sign}.{d}f}]"
    )
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.0f}%"
    return env


def render_html(results: Results, analysis: Analysis, drawer: Drawer | None = None) -> str:
    return environment().get_template("report.html.j2").render(**build_context(results, analysis, drawer))
