"""The report in every format, assembled from its sections (``octbench.report.sections`` and the report-section
plugins): the page loops over them for its navigation and body, and each export gathers what they give it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from octbench.kinds import variant_lists
from octbench.plugins import PluginHost
from octbench.report import export, figures, latex, leaderboard
from octbench.report.analysis import Analysis
from octbench.report.collect import Results
from octbench.report.figures import Drawer
from octbench.report.provenance import provenance_of
from octbench.report.section import Page, PluginSection, Section
from octbench.report.sections import AFTER_PLUGINS, BEFORE_PLUGINS
from octbench.report.wording import p_text
from octbench.stats import ALPHA


def page_of(results: Results, analysis: Analysis, drawer: Drawer | None = None) -> Page:
    """The report's page: its built-in sections and every report-section plugin's, installed or in a plugin file
    the run named, in page order. ``drawer`` (with a folder) also writes each figure as files."""
    page = Page(results, analysis, drawer or Drawer(analysis))
    built_in = [cls() for cls in BEFORE_PLUGINS + AFTER_PLUGINS]
    taken = {s.id for s in built_in}
    plugins = [PluginSection(p, taken) for p in _plugins(results, analysis)]
    page.sections = built_in[: len(BEFORE_PLUGINS)] + plugins + built_in[len(BEFORE_PLUGINS) :]
    return page


def _plugins(results: Results, analysis: Analysis) -> list[Any]:
    paths = [p for run in results.runs for p in run.provenance.get("plugin_paths", []) if Path(p).exists()]
    host = analysis.attempt("report-section plugins", PluginHost.load, paths)
    return [] if host is None else host.instances("report-section")


def draw(page: Page) -> dict[Section, dict[str, Any]]:
    """Every section's figures (with ``--figures``, written as files too)."""
    return {s: s.draw(page) for s in page.sections}


def html(page: Page) -> str:
    page.shared = _shared(page)
    drawn = draw(page)
    body = {s: Markup(s.html(page, drawn[s])) for s in page.sections if s.place == "body"}
    header = {s: Markup(s.html(page, drawn[s])) for s in page.sections if s.place == "header"}  # after the body:
    shown = [s for s in page.sections if body.get(s) or header.get(s)]  # it sums up what the body found
    return (
        page.shared["env"]
        .get_template("report.html.j2")
        .render(
            **page.shared,
            nav=[(s.id, s.nav) for s in shown if s.nav],
            header=[header[s] for s in shown if s in header],
            body=[body[s] for s in shown if s in body],
        )
    )


def markdown(page: Page) -> str:
    blocks = [b for s in page.sections if (b := s.markdown(page))]
    return "\n\n".join(b.rstrip("\n") for b in blocks) + "\n"


def to_json(page: Page) -> str:
    payload: dict[str, Any] = {}
    for s in page.sections:
        payload.update(s.json(page))
    return json.dumps(payload, indent=1, default=str)


def write_csv(page: Page, folder: Path) -> list[Path]:
    paths = []
    for s in page.sections:
        for stem, rows in s.tables(page).items():
            paths.append(folder / f"{figures.slug(stem)}.csv")
            export.written(paths[-1], export.csv_text(rows).encode())
    return paths


def to_latex(page: Page) -> str:
    return latex.document(page.results, page.analysis, [t for s in page.sections if (t := s.latex(page))])


def _shared(page: Page) -> dict[str, Any]:
    """The context every section's template gets."""
    results, analysis = page.results, page.analysis
    board = page.board
    return {
        "env": environment(),
        "title": " + ".join(r.label for r in results.runs),
        "runs": results.runs,
        "first": results.runs[0],
        "quick": any(r.row["quick"] for r in results.runs),
        "dataset": results.dataset,
        "class_names": results.class_names,
        "analysis": analysis,
        "variants": board,
        "best": leaderboard.best(board, analysis),
        "provenance": [provenance_of(run, results.variants) for run in results.runs],
        "leaderboard_columns": leaderboard.COLUMNS,
        "has_test": results.has_test,
        "devices": sorted({r.provenance["device"] for r in results.runs}),
        "stages": figures.STAGES,
        "unequal_budget": leaderboard.unequal_budget_legend(board),
        "odd_ensembles": analysis.odd_ensembles(),
        "totals": {
            "planned": sum(v.planned for v in results.variants),
            "done": sum(len(v.cells) for v in results.variants),
            "failed": sum(len(v.failed) for v in results.variants),
            "pending": sum(v.pending for v in results.variants),
        },
        "reference": analysis.reference,
        "positive": analysis.positive,
        "alpha": ALPHA,
        "settings": _settings(results),
        "variant_lists": list(variant_lists()),
        "gallery": page.gallery,
    }


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
    return html(page_of(results, analysis, drawer))
