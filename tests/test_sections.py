"""The report built from sections: the pages and exports say what they said before (fingerprints in
``tests/data/pages``, rendered by commit 827a75d), and a report-section plugin written as one file gets what a
built-in section gets: a nav link, its figures through the one figure writer, its table in every export, and its
sentence in the summary."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from octbench.report.publish import publish
from tests.conftest import FOUR_VARIANTS
from tests.pages import fingerprint

BEFORE = Path(__file__).parent / "data" / "pages"
EXAMPLE = Path(__file__).resolve().parents[1] / "reports" / "breastmnist-example"
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
SKILLS = {"baseline": 1.5, "flip": 1.6, "smote": 0.6, "class-weights": 1.4}
DAGGER = r"\textsuperscript{\dag}"


def rendered(store: Path, out: Path, figures: Path | None = None) -> Path:
    """Every format of ``store``'s report, written under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    publish([store], fmt="html", output=str(out / "report.html"), figures=figures)
    for fmt, ext in (("md", "md"), ("json", "json"), ("latex", "tex")):
        publish([store], fmt=fmt, output=str(out / f"report.{ext}"))
    publish([store], fmt="csv", output=str(out))
    return out


def assert_says_the_same(before: dict, now: dict, *, environment_free: bool = True) -> None:
    """Same sections in the same order with the same text, tables and image descriptions; the navigation keeps
    every old link in order (it gained the sections it lacked); every export keeps its keys and values."""
    if not environment_free:  # the device line names the machine and threads of the process that wrote the store
        before, now = _without_threads(before), _without_threads(now)
    old, new = before["page"], now["page"]
    assert [link for link in new["nav"] if link in old["nav"]] == old["nav"]
    assert set(new["nav"]) - set(old["nav"]) <= {"#images", "#tuning"}, new["nav"]
    assert list(new["sections"]) == list(old["sections"])
    for name, section in old["sections"].items():
        if name == "Provenance" and not environment_free:
            continue  # the commit, versions and command of the machine that wrote the store
        mine = new["sections"][name]
        assert mine["text"] == section["text"], name
        assert mine["tables"] == section["tables"], name
        assert [alt for alt, _ in mine["images"]] == [alt for alt, _ in section["images"]], name
    was, now_ = before["exports"], now["exports"]
    kept = {k: v for k, v in now_["json"].items() if k in was["json"]}
    if not environment_free:
        kept.pop("runs"), was["json"].pop("runs")
    assert kept == was["json"]
    assert now_["leaderboard_keys"] == was["leaderboard_keys"] and now_["csv"] == was["csv"]
    assert now_["markdown"] == was["markdown"]
    assert now_["latex"].replace(DAGGER, "") == was["latex"].replace(DAGGER, "")


def _without_threads(found: dict) -> dict:
    """The page without the machine that wrote the store ('device: cpu: AMD EPYC, 2 threads')."""
    return json.loads(re.sub(r"device: [^\"]*?\d+ threads?", "device: D", json.dumps(found)))


def test_the_report_of_made_up_results_says_what_it_said_before_sections(tmp_path, monkeypatch):
    from tests.numbers import write_results

    monkeypatch.setenv("OCTBENCH_DISABLE_PLUGINS", "extra")  # as the fingerprint was made: the core's sections only
    (tmp_path / "suite.yaml").write_text(FOUR_VARIANTS)
    store = write_results(tmp_path / "suite.yaml", tmp_path / "out", SKILLS, report=False)
    now = fingerprint(rendered(store, tmp_path / "now"))
    before = json.loads((BEFORE / "numbers.json").read_text())
    assert_says_the_same(before, now, environment_free=False)
    # the one change: a LaTeX dagger where a Holm p is exactly 0 (the bootstrap's smallest), which 827a75d dropped
    # ("p or 1.0") while the page and the Markdown marked it
    latex = (tmp_path / "now" / "report.tex").read_text()
    smote = next(line for line in latex.splitlines() if line.startswith("smote "))
    assert (
        smote.endswith(f"0.760{DAGGER} \\\\")
        and "0.760 [0.667, 0.844] †" in (tmp_path / "now" / "report.md").read_text()
    )


@pytest.mark.slow
def test_the_committed_breastmnist_example_says_what_it_said_before_sections(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("OCTBENCH_DISABLE_PLUGINS", "extra")
    monkeypatch.chdir(EXAMPLE.parents[1])  # the run found its data at ../shared/data/medmnist from the repository
    store = tmp_path / EXAMPLE.name  # a copy: reading a store may leave SQLite's side files beside it
    store.mkdir()
    shutil.copy(EXAMPLE / "results.sqlite", store / "results.sqlite")
    now = fingerprint(rendered(store, tmp_path / "now"))
    assert_says_the_same(json.loads((BEFORE / "breastmnist-example.json").read_text()), now)


SECTION = next(b for b in re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S) if "ReportSection" in b)


def test_a_section_plugin_in_one_file_gets_a_nav_link_figures_every_export_and_a_summary_sentence(
    numbers_dir, tmp_path, monkeypatch
):
    plugin = tmp_path / "cell_count.py"
    plugin.write_text(SECTION)  # the guide's example, as written
    monkeypatch.setenv("OCTBENCH_PLUGINS", str(plugin))
    out = rendered(numbers_dir, tmp_path / "out", figures=tmp_path / "figures")
    page = (out / "report.html").read_text()
    assert '<a href="#guide-cell-count">Cells per variant</a>' in page
    assert '<h2 id="guide-cell-count">Cells per variant</h2>' in page and "<li>smote: 3 of 3</li>" in page
    assert re.search(r'<img src="data:image/png;base64,[^"]+" alt="cells done per variant">', page)
    summary = re.search(r'<p class="summary" id="summary">(.*?)</p>', page, re.S)[1]
    assert summary.rstrip().endswith("12 of 12 planned cells have a result.")
    assert {p.suffix for p in (tmp_path / "figures").glob("guide-cell-count-cells-done-per-variant.*")} == {
        ".svg", ".pdf", ".png"}  # fmt: skip
    payload = json.loads((out / "report.json").read_text())
    assert payload["guide-cell-count"][2] == {"variant": "smote", "done": 3, "planned": 3}
    assert payload["summary"].endswith("12 of 12 planned cells have a result.")
    assert (out / "guide-cell-count.csv").read_text().splitlines() == [
        "variant,done,planned", "baseline,3,3", "flip,3,3", "smote,3,3", "class-weights,3,3"]  # fmt: skip
    markdown = (out / "report.md").read_text()
    assert "## Cells per variant\n\n| variant | done | planned |\n|---|---|---|\n| baseline | 3 | 3 |" in markdown
    latex = (out / "report.tex").read_text()
    assert r"\caption{Cells per variant}" in latex and r"class-weights & 3 & 3 \\" in latex


BROKEN = '''
from octbench import hookimpl
from octbench.technique import ReportSection


class Broken(ReportSection):
    """Renders, but its figure and its table raise."""

    name = "broken-section"
    title = "Broken"

    def render(self, results, analysis):
        return "<p>still here</p>"

    def figures(self, results, analysis):
        raise RuntimeError("no figure today")

    def rows(self, results, analysis):
        raise ValueError("no table today")


@hookimpl
def register_report_sections(register):
    register(Broken)
'''


def test_a_section_whose_figures_or_rows_raise_is_named_and_the_report_renders(numbers_dir, tmp_path, monkeypatch):
    plugin = tmp_path / "broken.py"
    plugin.write_text(BROKEN)
    monkeypatch.setenv("OCTBENCH_PLUGINS", str(plugin))
    out = rendered(numbers_dir, tmp_path / "out")
    page = (out / "report.html").read_text()
    assert "<p>still here</p>" in page and "Leaderboard" in page
    assert "report section &#39;broken-section&#39;: RuntimeError: no figure today" in page
    assert "broken-section" not in json.loads((out / "report.json").read_text())
    assert not (out / "broken-section.csv").exists() and (out / "leaderboard.csv").exists()
