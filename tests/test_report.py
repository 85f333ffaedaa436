"""The report: statistics, figures and exports for a suite of four variants, and merging runs."""

from __future__ import annotations

import csv
import json
import re

import markdown
from click.testing import CliRunner

from octbench.cli import cli
from octbench.runner import run_suite
from tests.conftest import FOUR_VARIANTS as SUITE


def report(*args):
    return CliRunner().invoke(cli, ["report", *map(str, args)], catch_exceptions=False)


def test_html_report_shows_statistics_and_figures(run_dir):
    html = (run_dir / "report.html").read_text()
    for text in (
        "Leaderboard",
        "Comparison with the reference",
        "corrected resampled t-test",
        "Wilcoxon",
        "Holm",
        "McNemar",
        "bootstrap",
        "Friedman test",
        "critical difference",
        "Provenance",
    ):
        assert text in html, text
    for alt in (
        "effect of each variant against the reference",
        "critical difference diagram",
        "fold spread of",
        "throughput and stage times",
    ):
        assert f'alt="{alt}' in html, alt
    for name in ("baseline", "flip", "smote", "class-weights"):
        assert f'alt="confusion matrix of {name}"' in html and f'alt="ROC curves of {name}"' in html
        assert f'alt="training curves of {name}"' in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 4 * 3 + 4
    assert "http://" not in html and "https://" not in html, "the page must stand alone"


def test_markdown_export_renders_as_a_table(run_dir):
    result = report(run_dir, "--format", "md")
    assert result.exit_code == 0
    text = (run_dir / "report.md").read_text()
    html = markdown.markdown(text, extensions=["tables"])
    assert html.count("<table>") == 1
    assert html.count("<tr>") == 1 + 4
    assert "<th>Variant</th>" in html and "baseline (reference)" in html


def test_csv_and_json_exports(run_dir):
    assert report(run_dir, "--format", "csv").exit_code == 0
    with open(run_dir / "leaderboard.csv") as handle:
        leaderboard = list(csv.DictReader(handle))
    with open(run_dir / "cells.csv") as handle:
        cells = list(csv.DictReader(handle))
    assert [r["variant"] for r in leaderboard] == ["baseline", "flip", "smote", "class-weights"]
    assert len(cells) == 4 * 3 * 2  # variants x folds x (held-out, test)
    out = run_dir / "x.json"
    assert report(run_dir, "--format", "json", "--output", out).exit_code == 0
    payload = json.loads(out.read_text())
    assert payload["reference"] == "baseline" and len(payload["leaderboard"]) == 4
    smote = next(r for r in payload["leaderboard"] if r["variant"] == "smote")
    assert smote["delta_accuracy"] is not None and 0 <= smote["p_corrected_t_holm"] <= 1


def test_merging_runs_keys_variants_by_run(run_dir, tmp_path):
    result = report(run_dir, run_dir, "--format", "json", "--output", tmp_path / "merged.json")
    assert result.exit_code == 0
    names = [r["variant"] for r in json.loads((tmp_path / "merged.json").read_text())["leaderboard"]]
    assert names[:2] == ["out/baseline", "out/flip"] and len(names) == 8
    assert report(run_dir, run_dir, "--output", tmp_path / "merged.html").exit_code == 0


def test_merging_different_datasets_is_refused(run_dir, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(SUITE.replace("n_train: 240", "n_train: 200"))
    run_suite(other, out=tmp_path / "other", progress=False, overrides=["variants=[{name: baseline}]"])
    result = report(run_dir, tmp_path / "other")
    assert result.exit_code == 2 and "same dataset" in result.output
