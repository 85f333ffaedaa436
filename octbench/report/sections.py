"""The report's built-in sections, in page order. Each is a ``Section`` (``octbench.report.section``), the contract a
report-section plugin's section is held to as well; their HTML is under ``templates/sections/``."""

from __future__ import annotations

from typing import Any

from octbench.report import export, figures, images, latex, tuned
from octbench.report.compare import confusions, rocs
from octbench.report.section import Page, Section, TemplateSection
from octbench.report.summary import summary


class Summary(TemplateSection):
    """The opening paragraph: the verdicts in words, then every other section's sentence."""

    id, place = "summary", "header"

    def text(self, page: Page) -> str:
        more = [s.sentence(page) for s in page.sections if s is not self]
        return summary(page.results, page.analysis, more)

    def html(self, page: Page, figures: dict[str, Any]) -> str:
        page.shared["summary"] = self.text(page)
        return super().html(page, figures)

    def json(self, page: Page) -> dict[str, Any]:
        analysis = page.analysis
        return {
            "summary": self.text(page),
            "dataset": page.results.dataset,
            "design": {"folds": analysis.folds, "seeds": analysis.seeds},
            "metric": analysis.metric,
            "reference": analysis.reference.key if analysis.reference else None,
            "positive_class": analysis.class_names[analysis.positive] if analysis.positive is not None else None,
            "test_train_ratio": analysis.test_train_ratio,
        }

    def markdown(self, page: Page) -> str:
        return export.md_cell(self.text(page))


class Leaderboard(TemplateSection):
    id, nav = "leaderboard", "Leaderboard"

    def _flat(self, page: Page) -> list[dict[str, Any]]:
        return [row.flat(page.analysis) for row in page.board]

    def json(self, page: Page) -> dict[str, Any]:
        return {"leaderboard": self._flat(page)}

    def tables(self, page: Page) -> dict[str, list[dict[str, Any]]]:
        return {"leaderboard": self._flat(page)}

    def markdown(self, page: Page) -> str:
        return export.leaderboard_markdown(page.results, page.analysis, page.board)

    def latex(self, page: Page) -> str:
        return latex.table(page.results, page.analysis, page.board)


class Compare(TemplateSection):
    id, nav = "compare", "Compare"

    def draw(self, page: Page) -> dict[str, Any]:
        return figures.side_by_side(page.results, page.drawer)

    def json(self, page: Page) -> dict[str, Any]:
        matrices = confusions(page.analysis)
        return {
            "confusion": {k: {view: m.tolist() for view, m in v.items()} for k, v in matrices.items()},
            "roc": rocs(page.analysis),
        }


class Verdicts(TemplateSection):
    id, nav, template = "comparison", "Verdicts", "verdicts"

    def draw(self, page: Page) -> dict[str, Any]:
        return figures.verdicts(page.drawer)

    def markdown(self, page: Page) -> str:
        if page.analysis.reference is None:
            return ""
        return export.verdicts_markdown(page.board, page.analysis, page.results.has_test)


class Clinical(TemplateSection):
    id, nav = "clinical", "Clinical"

    def draw(self, page: Page) -> dict[str, Any]:
        return figures.calibration(page.drawer)

    def json(self, page: Page) -> dict[str, Any]:
        return {"prevalence": page.analysis.prevalence}


class Images(TemplateSection):
    id, nav = "images", "Images"

    def draw(self, page: Page) -> dict[str, Any]:
        if page.drawer.folder is not None:
            page.drawer.written += images.write(page.gallery, page.drawer.folder)
        return {}

    def sentence(self, page: Page) -> str:
        return page.selection.summary_sentence()

    def json(self, page: Page) -> dict[str, Any]:
        return {"images": page.selection.as_json()}


class Timing(TemplateSection):
    id, nav = "timing", "Timing"

    def draw(self, page: Page) -> dict[str, Any]:
        return figures.timing(page.drawer)


class Variants(TemplateSection):
    """Each variant's folded detail, and every cell's numbers for the exports."""

    id, nav = "variants", "Variants"

    def draw(self, page: Page) -> dict[str, Any]:
        return figures.per_variant(page.results, page.drawer)

    def json(self, page: Page) -> dict[str, Any]:
        return {"cells": export.cell_rows(page.results)}

    def tables(self, page: Page) -> dict[str, list[dict[str, Any]]]:
        return {"cells": export.cell_rows(page.results)}


class Tuning(Section):
    """How each tuned variant searched; absent where no cell was tuned."""

    id, nav = "tuning", "Tuning"

    def _found(self, page: Page) -> list[tuned.VariantSearch]:
        if "tuning" not in page.shared:
            page.shared["tuning"] = page.analysis.attempt("the tuning section", tuned.searches, page.results) or []
        return page.shared["tuning"]

    def draw(self, page: Page) -> dict[str, Any]:
        return tuned.draw(self._found(page), page.drawer)

    def html(self, page: Page, figures: dict[str, Any]) -> str:
        found = self._found(page)
        body = found and page.analysis.attempt("the tuning section", tuned.render, found, figures.get("search"))
        return f'<h2 id="{self.id}">Tuning</h2>\n{body}\n' if body else ""

    def sentence(self, page: Page) -> str:
        return tuned.sentence(page.results) if self._found(page) else ""

    def json(self, page: Page) -> dict[str, Any]:
        found = self._found(page)
        return {"tuning": tuned.rows(found)} if found else {}

    def tables(self, page: Page) -> dict[str, list[dict[str, Any]]]:
        return self.json(page)


class Configuration(TemplateSection):
    id, nav, template = "suite", "Configuration", "configuration"


class Provenance(TemplateSection):
    id, nav = "provenance", "Provenance"

    def json(self, page: Page) -> dict[str, Any]:
        return {
            "runs": [
                {
                    "label": r.label,
                    "suite": r.row["suite_name"],
                    "quick": bool(r.row["quick"]),
                    "provenance": r.provenance,
                }
                for r in page.results.runs
            ]
        }


#: the built-in sections before the plugins' and after them, in page order
BEFORE_PLUGINS = (Summary, Leaderboard, Compare, Verdicts, Clinical, Images, Timing, Variants, Tuning)
AFTER_PLUGINS = (Configuration, Provenance)
