"""The report, built from sections. Every part of the page (the summary, the leaderboard, the verdicts... and each
report-section plugin) is a ``Section``: it draws its figures through the page's one figure writer (so
``--figures`` writes them), renders its HTML, gives its tables to the CSV, JSON, Markdown and LaTeX exports, may
add a sentence to the summary, and names its entry in the page's navigation. ``octbench.report.publish`` and the
template only loop over sections; none of them names one.

A plugin's section is a ``octbench.technique.ReportSection``, adapted here (``PluginSection``) to the same contract.
"""

from __future__ import annotations

import html as html_text
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from jinja2 import Environment

from octbench.report import images, leaderboard
from octbench.report.analysis import Analysis
from octbench.report.collect import Results
from octbench.report.figures import Drawer


@dataclass
class Page:
    """What every section reads: the stored results, their analysis, the figure writer, and what more than one
    section needs (the leaderboard's rows, the images), each computed once."""

    results: Results
    analysis: Analysis
    drawer: Drawer = None  # type: ignore[assignment]
    sections: list[Section] = field(default_factory=list)  # in page order
    shared: dict[str, Any] = field(default_factory=dict)  # the template context every section's template gets

    def __post_init__(self) -> None:
        self.drawer = self.drawer or Drawer(self.analysis)

    @cached_property
    def board(self) -> list[leaderboard.Row]:
        return leaderboard.rows(self.results, self.analysis)

    @cached_property
    def gallery(self) -> images.Gallery:
        """The page's images (the dataset loaded as the run loaded it), or why none can be shown."""
        return images.safe_gallery(self.results, self.analysis)

    @cached_property
    def selection(self) -> images.Selection:
        """Which images the page shows; the exports need only this, not the drawn tiles."""
        if "gallery" in self.__dict__:
            return self.gallery.selection
        return images.selection(self.results, self.analysis)


class Section:
    """One part of the report. Override what the section has; every method has a default that adds nothing."""

    #: the anchor of its heading (and its key where it has one table to export)
    id: ClassVar[str] = ""
    #: its link in the page's navigation ('' for none)
    nav: ClassVar[str] = ""
    #: 'header' (under the title, with the summary) or 'body'
    place: ClassVar[str] = "body"

    def draw(self, page: Page) -> dict[str, Any]:
        """Its figures, drawn with ``page.drawer.draw`` (a data URI each, or None where one could not be drawn)."""
        return {}

    def html(self, page: Page, figures: dict[str, Any]) -> str:
        """Its HTML, with ``figures`` from ``draw``; '' leaves it off the page."""
        return ""

    def sentence(self, page: Page) -> str:
        """A sentence for the report's summary, or ''."""
        return ""

    def json(self, page: Page) -> dict[str, Any]:
        """Its entries of the JSON export (top-level keys)."""
        return {}

    def tables(self, page: Page) -> dict[str, list[dict[str, Any]]]:
        """Its tables for the CSV export: file stem -> rows."""
        return {}

    def markdown(self, page: Page) -> str:
        """Its block of the Markdown export, or ''."""
        return ""

    def latex(self, page: Page) -> str:
        """Its LaTeX (a ``table`` environment), or ''."""
        return ""


class TemplateSection(Section):
    """A section whose HTML is a template under ``templates/sections/``, rendered with the page's shared context
    plus its own figures."""

    template: ClassVar[str] = ""

    def html(self, page: Page, figures: dict[str, Any]) -> str:
        env: Environment = page.shared["env"]
        return env.get_template(f"sections/{self.template or self.id}.html.j2").render(**page.shared, figures=figures)


class PluginSection(Section):
    """A ``ReportSection`` plugin under the section contract: its ``render`` HTML under a heading and a nav link
    named by its ``title``, its ``figures`` drawn through the page's writer and shown below, its ``rows`` as a JSON
    key, a CSV file, a Markdown and a LaTeX table, both named after it, and its ``sentence`` in the summary. A
    plugin that fails is left out, with why, among the page's problems."""

    def __init__(self, plugin: Any, taken: set[str]) -> None:
        self.plugin = plugin
        name = plugin.name
        self.id = name if name not in taken else f"plugin-{name}"
        self.nav = plugin.title or name
        self.label = f"report section '{name}'"
        self._rows: list[dict[str, Any]] | None = None

    def _call(self, page: Page, method: str, default: Any) -> Any:
        found = getattr(self.plugin, method, None)
        if found is None:
            return default
        value = page.analysis.attempt(self.label, found, page.results, page.analysis)
        return default if value is None else value

    def rows(self, page: Page) -> list[dict[str, Any]]:
        """The plugin's table, asked for once."""
        if self._rows is None:
            self._rows = [dict(r) for r in self._call(page, "rows", [])]
        return self._rows

    def draw(self, page: Page) -> dict[str, Any]:
        made = self._call(page, "figures", {})
        return {
            title: page.drawer.draw(f"{self.plugin.name} {title}", lambda f=f: f, remember_it=False)
            for title, f in made.items()
        }

    def html(self, page: Page, figures: dict[str, Any]) -> str:
        body = page.analysis.attempt(self.label, self.plugin.render, page.results, page.analysis)
        if body is None:
            return ""
        shown = "".join(
            f'<figure><img src="{uri}" alt="{html_text.escape(title)}"><figcaption>{html_text.escape(title)}'
            "</figcaption></figure>"
            for title, uri in figures.items()
            if uri
        )
        return f'<h2 id="{html_text.escape(self.id)}">{html_text.escape(self.nav)}</h2>\n{body}{shown}\n'

    def sentence(self, page: Page) -> str:
        return str(self._call(page, "sentence", "") or "")

    def json(self, page: Page) -> dict[str, Any]:
        rows = self.rows(page)
        return {self.id: rows} if rows else {}

    def tables(self, page: Page) -> dict[str, list[dict[str, Any]]]:
        rows = self.rows(page)
        return {self.id: rows} if rows else {}

    def markdown(self, page: Page) -> str:
        from octbench.report.export import md_table

        rows = self.rows(page)
        return f"## {self.nav}\n\n{md_table(rows)}" if rows else ""

    def latex(self, page: Page) -> str:
        from octbench.report.latex import rows_table

        rows = self.rows(page)
        return rows_table(rows, self.nav) if rows else ""
