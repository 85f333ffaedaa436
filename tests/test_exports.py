"""Paper-ready exports: LaTeX that pdflatex compiles, per-image predictions that reproduce the report's numbers,
figures as SVG, PDF and 300-dpi PNG."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from collections import defaultdict

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import accuracy_score, roc_auc_score

from octbench.cli import cli
from octbench.report.latex import escape


def report(*args):
    return CliRunner().invoke(cli, ["report", *map(str, args)], catch_exceptions=False)


def test_latex_table_has_booktabs_bold_best_daggers_and_a_caption(numbers_dir, tmp_path):
    out = tmp_path / "table.tex"
    assert report(numbers_dir, "--format", "latex", "--output", out).exit_code == 0
    tex = out.read_text()
    for text in (r"\toprule", r"\midrule", r"\bottomrule", r"\usepackage{booktabs}", r"\caption{", r"$\pm$"):
        assert text in tex, text
    assert r"\textbf{" in tex, "the best value of each column is bold"
    assert "3-fold cross-validation x 1 seed" in tex and "Holm-adjusted" in tex and "McNemar" in tex
    body = tex[tex.index(r"\midrule") : tex.index(r"\bottomrule")]
    assert body.count(r"\\") == 4 and "baseline (ref.)" in body
    printed = report(numbers_dir, "--format", "latex", "--output", "-")
    assert printed.exit_code == 0


def test_latex_escapes_what_names_may_hold():
    assert escape("a_b & 50% {x} #1 ~ ^ \\ $") == (
        r"a\_b \& 50\% \{x\} \#1 \textasciitilde{} \textasciicircum{} \textbackslash{} \$"
    )
    assert escape("é→x") == "e?x"
    assert escape("[/bold]x") == "{}[/bold]x", "a row may not start with '[' (it would read as \\\\[length])"


@pytest.mark.skipif(
    shutil.which("pdflatex") is None,
    reason="no pdflatex here (Debian: apt-get install texlive-latex-base texlive-latex-recommended)",
)
def test_the_latex_export_compiles_with_pdflatex(numbers_dir, tmp_path):
    tex = tmp_path / "report.tex"
    assert report(numbers_dir, "--format", "latex", "--output", tex).exit_code == 0
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", tex.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "report.pdf").stat().st_size > 1000


@pytest.mark.slow
def test_predictions_reproduce_the_reports_numbers_with_scikit_learn(numbers_dir, tmp_path):
    out = tmp_path / "predictions.csv"
    assert report(numbers_dir, "--format", "predictions", "--output", out).exit_code == 0
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    json_path = tmp_path / "report.json"
    assert report(numbers_dir, "--format", "json", "--output", json_path).exit_code == 0
    payload = json.loads(json_path.read_text())
    classes = payload["dataset"]["class_names"]
    # every image of every cell's two splits: per variant the 280-image pool once (one seed) and 3 x 60 test images
    assert len(rows) == 4 * (280 + 3 * 60)

    by_cell = defaultdict(list)
    for row in rows:
        by_cell[(row["variant"], int(row["seed"]), int(row["fold"]), row["split"])].append(row)
    cells = {(c["variant"], c["seed"], c["fold"], c["split"]): c for c in payload["cells"]}
    assert set(by_cell) == set(cells), "every stored cell and split is exported"
    for key, found in by_cell.items():
        y = np.array([int(r["label"]) for r in found])
        probs = np.array([[float(r[f"p[{n}]"]) for n in classes] for r in found])
        odds = np.array([[float(r[f"log_odds[{n}]"]) for n in classes] for r in found])
        assert accuracy_score(y, probs.argmax(1)) == pytest.approx(cells[key]["accuracy"], abs=1e-12), key
        if len(np.unique(y)) == len(classes):
            auc = np.mean([roc_auc_score(y == c, odds[:, c]) for c in range(len(classes))])
            assert auc == pytest.approx(cells[key]["auc_macro"], abs=1e-9), key

    # the test split's ensemble: the fold models' probabilities averaged, image by image
    for row in payload["leaderboard"]:
        test = [r for r in rows if r["variant"] == row["variant"] and r["split"] == "test"]
        by_image = defaultdict(list)
        for r in test:
            by_image[int(r["index"])].append(([float(r[f"p[{n}]"]) for n in classes], int(r["label"])))
        y = np.array([members[0][1] for _, members in sorted(by_image.items())])
        mean = np.array([np.mean([p for p, _ in members], axis=0) for _, members in sorted(by_image.items())])
        assert accuracy_score(y, mean.argmax(1)) == pytest.approx(row["test_ensemble_accuracy"], abs=1e-12)
        auc = np.mean([roc_auc_score(y == c, mean[:, c]) for c in range(len(classes))])
        assert auc == pytest.approx(row["test_ensemble_auc"], abs=2e-3)  # probabilities near 1 tie; log-odds do not


@pytest.mark.slow
def test_figures_are_written_as_svg_pdf_and_300_dpi_png(numbers_dir, tmp_path):
    from PIL import Image

    folder = tmp_path / "figures"
    result = report(numbers_dir, "--format", "md", "--output", tmp_path / "r.md", "--figures", folder)
    assert result.exit_code == 0 and "figures: " in result.output
    stems = {p.stem for p in folder.iterdir() if p.is_file()}
    assert {"ROC-of-every-variant", "learning-curves-of-every-variant", "effects", "throughput"} <= stems
    core = {s for s in stems if not s.startswith("class-balance-")}  # the example package's section, if installed
    assert "confusion-matrix-of-baseline" in stems and len(core) == 4 * 3 + 4 + 4
    for stem in stems:
        assert {p.suffix for p in folder.glob(f"{stem}.*")} == {".svg", ".pdf", ".png"}, stem
    with Image.open(folder / "effects.png") as image:
        assert round(image.info["dpi"][0]) == 300
    assert (folder / "effects.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    # and every image the page shows, one PNG each, by view: the montage, errors, pipelines, Grad-CAM, near-copies
    tiles = sorted((folder / "images").rglob("*.png"))
    assert f"and the page's {len(tiles)} images (PNG) under {folder / 'images'}" in result.output
    views = {p.relative_to(folder / "images").parts[0] for p in tiles}
    assert {"montage", "grad-cam", "near-duplicates", "baseline", "flip"} <= views, views
    with Image.open(
        folder
        / "images"
        / "montage"
        / "normal"
        / sorted(p.name for p in (folder / "images" / "montage" / "normal").iterdir())[0]
    ) as image:
        assert image.size == (28, 28)
    again = tmp_path / "again"  # the page writes the same figures it embeds
    result = report(numbers_dir, "--output", tmp_path / "r.html", "--figures", again)
    assert result.exit_code == 0 and f"figures: {3 * len(stems)} files" in result.output
    assert (again / "effects.svg").read_bytes() == (folder / "effects.svg").read_bytes(), "no dates in the files"


def test_provenance_warns_of_an_unknown_or_modified_commit_and_says_who_shared_the_device():
    from octbench.report.provenance import sharing, warnings

    assert warnings({"octbench_commit": "abc1234"}) == []
    assert "not in any commit" in warnings({"octbench_commit": "abc1234+dirty"})[0]
    assert "unknown" in warnings({"octbench_commit": "unknown"})[0]
    assert "to itself" in sharing({"executor": {"parallel": 1, "stack": 1}})
    assert "up to 8 cells at once (2 processes × stacks of up to 4)" in sharing(
        {"executor": {"parallel": 2, "stack": 4}}
    )


def test_only_octbench_code_makes_a_checkout_dirty(tmp_path, monkeypatch):
    """A results folder or a suite inside the checkout is not the code that made the results."""
    import octbench.store.provenance as provenance

    root = tmp_path / "checkout"
    (root / "octbench").mkdir(parents=True)
    (root / "octbench" / "core.py").write_text("x = 1\n")
    (root / "reports").mkdir()
    (root / "reports" / "report.html").write_text("old\n")
    git = ["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "start"], check=True)
    monkeypatch.setattr(provenance, "__file__", str(root / "octbench" / "provenance.py"))
    (root / "reports" / "report.html").write_text("new\n")
    assert not provenance.source_commit().endswith("+dirty")
    (root / "octbench" / "core.py").write_text("x = 2\n")
    assert provenance.source_commit().endswith("+dirty")


def test_a_page_figure_is_laid_out_and_drawn_once_each(monkeypatch):
    """tight_layout measures every text once; savefig must then draw once, not lay the texts out again for a layout
    engine that tight_layout leaves behind (a quarter of a report's rendering time)."""
    import base64

    from matplotlib.figure import Figure

    from octbench.report import plots

    fig = plots.fold_spread({"a": [0.7, 0.8], "b": [0.6, 0.9]}, "accuracy")
    draws = []
    real = Figure.draw
    monkeypatch.setattr(Figure, "draw", lambda self, renderer: (draws.append(1), real(self, renderer))[1])
    uri = plots.to_data_uri(fig)
    assert len(draws) == 1
    assert base64.b64decode(uri.split(",", 1)[1]).startswith(b"\x89PNG")


def test_a_saved_figure_is_laid_out_once_for_its_three_files(monkeypatch, tmp_path):
    """--figures: one tight box serves the SVG, the PDF and the PNG, so each file costs one draw, not a layout pass
    and a draw (a third of --figures' time), and the box is the one savefig's own "tight" finds."""
    from matplotlib.figure import Figure
    from PIL import Image

    from octbench.report import plots

    def spread():
        return plots.fold_spread({"a": [0.7, 0.8], "b": [0.6, 0.9]}, "accuracy")

    draws = []
    real = Figure.draw
    monkeypatch.setattr(Figure, "draw", lambda self, renderer: (draws.append(1), real(self, renderer))[1])
    written = plots.save(spread(), tmp_path / "spread")
    assert [p.suffix for p in written] == [".svg", ".pdf", ".png"] and len(draws) == 3
    monkeypatch.setattr(Figure, "draw", real)
    tight = spread()
    tight.savefig(tmp_path / "tight.png", dpi=300, bbox_inches="tight")
    with Image.open(tmp_path / "spread.png") as ours, Image.open(tmp_path / "tight.png") as theirs:
        close = all(abs(a - b) <= 6 for a, b in zip(ours.size, theirs.size, strict=True))  # 6 px at 300 dpi: 1.4 pt
        assert close, (ours.size, theirs.size)


def test_a_report_rendered_again_from_an_unchanged_store_redraws_nothing(numbers_dir, tmp_path, monkeypatch):
    """Figures are remembered by their drawing function and inputs (``figures.figure_key``): the second render
    draws none and gives the same page; a figure whose inputs change is drawn again."""
    from octbench.report import plots
    from octbench.report.publish import publish

    drawn = []
    real = plots.to_data_uri
    monkeypatch.setattr(plots, "to_data_uri", lambda fig: drawn.append(fig) or real(fig))
    publish([numbers_dir], output=str(tmp_path / "first.html"))
    first = len(drawn)
    assert first >= 4 * 3 + 4 + 4, "every figure drawn the first time"
    publish([numbers_dir], output=str(tmp_path / "again.html"))
    arrive_drawn = (tmp_path / "first.html").read_text().count('alt="class shares per split"')  # example package
    assert len(drawn) - first == arrive_drawn, "only a plugin's figure, which arrives drawn, is drawn again"
    assert (tmp_path / "first.html").read_bytes() == (tmp_path / "again.html").read_bytes()
    publish([numbers_dir], output=str(tmp_path / "other.html"), metric="balanced_accuracy")
    assert len(drawn) - first > 2, "the verdicts on another metric are new figures"


def test_remembered_figures_are_forgotten_oldest_first_past_their_limit(tmp_path, monkeypatch):
    import os

    from octbench.report import figures

    for n in range(5):
        figures.remember(f"{n:02d}" + "a" * 30, "x" * 1000)
        path = figures._figure_file(f"{n:02d}" + "a" * 30)
        os.utime(path, ns=(n * 10**9, n * 10**9))  # written in order 0, 1, ..., 4
    assert figures.remembered("00" + "a" * 30) == "x" * 1000  # read: now the most recently used
    assert figures.forget_old_figures(limit=3000) == 2
    kept = sorted(p.name[:2] for p in (figures.cache_dir() / "figures").glob("*/*.txt"))
    assert kept == ["00", "03", "04"]
