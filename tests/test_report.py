"""The report: statistics, figures and exports for a suite of four variants, and merging runs."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3
from html import unescape

import markdown
import pytest
from click.testing import CliRunner

from octbench import stats
from octbench.cli import cli
from octbench.runner import run_suite
from tests.conftest import FOUR_VARIANTS as SUITE


def report(*args):
    return CliRunner().invoke(cli, ["report", *map(str, args)], catch_exceptions=False)


def test_html_report_shows_statistics_and_figures(numbers_dir):
    html = (numbers_dir / "report.html").read_text()
    for text in (
        "Leaderboard",
        "Verdicts against the reference",
        "corrected resampled t-test",
        "Bayesian correlated t-test",
        "practically equivalent",
        "Detectable",
        "Holm",
        "McNemar",
        "paired bootstrap",
        "ensemble",
        "Wilson",
        "Brier",
        "Class prevalence",
        "Provenance",
    ):
        assert text in html, text
    # the folds of one dataset are not independent blocks: no rank tests over them
    for text in ("Friedman", "Wilcoxon", "Nemenyi", "critical difference"):
        assert text not in html, text
    for alt in (
        "effect of each variant against the reference",
        "fold spread of",
        "throughput and stage times",
        "reliability diagram",
    ):
        assert f'alt="{alt}' in html, alt
    for name in ("baseline", "flip", "smote", "class-weights"):
        assert f'alt="confusion matrix of {name}"' in html and f'alt="ROC curves of {name}"' in html
        assert f'alt="training curves of {name}"' in html
    # per variant 3; effects, spread, throughput, reliability; and the compare views: ROC overlaid, the confusion
    # grids of the test ensembles and of the CV pool, the learning curves overlaid
    core = html.split('<h2 id="class-balance">')[0]  # the example package's section, where it is installed, adds one
    assert len(re.findall(r'<img src="data:image/png;base64,', core)) == 4 * 3 + 4 + 4  # figures; tiles apart
    assert 'alt="ROC curves of every variant overlaid: the macro average' in html
    assert "alt=\"confusion matrices of every variant's test-split ensemble" in html
    assert 'alt="confusion matrices of every variant on the CV pool' in html
    assert 'alt="inner-validation loss and accuracy per epoch of every variant, and the number of cells' in html
    summary = re.search(r'<p class="summary" id="summary">(.*?)</p>', html, re.S).group(1)
    assert "reference: baseline" in summary and "3-fold cross-validation × 1 seed" in summary
    assert html.count("<details>") >= 4, "each variant's detail is folded"
    assert 'class="best"' in html and "+batch-augment(hflip=0.5)" in html and "+smote" in html
    assert "http://" not in html and "https://" not in html, "the page must stand alone"


def test_legends_name_the_test_and_the_family_that_set_each_mark(numbers_dir):
    """Four classes: the macro-AUC mark is the paired bootstrap's alone; Holm's family is stated; the Brier score is
    summed over classes; the detectable difference is stated at the level the marks clear; and the agreement of CV
    and the test split is judged like with like."""
    from octbench.report.analysis import analyse
    from octbench.report.collect import load

    html = unescape((numbers_dir / "report.html").read_text())
    text = " ".join(html.split())
    assert "DeLong (AUC, per-class DeLong" not in text
    assert (
        "on the test split by McNemar (accuracy) and a paired bootstrap of the macro AUC (the per-class DeLong tests "
        "in each variant's section are unadjusted and set no mark)" in text
    )
    assert "Holm adjusts over the 3 variants compared with the reference, separately in each column" in text
    assert (
        "squared error of the predicted probabilities summed over the 4 classes, averaged over images (0 is "
        "perfect, 2 the worst)" in text
    )
    assert "at the level Holm's first step tests (0.05/3, the level a ▲/▼ must clear)" in text
    assert "compared like with like" in text or "CV and the test split disagree" in text
    assert "differs between the CV pool and the test split by 0%" not in text
    analysis = analyse(load([numbers_dir]))
    compared = [a.comparisons["accuracy"] for a in analysis.variants if "accuracy" in a.comparisons]
    assert len(compared) == analysis.comparisons == 3
    for c in compared:
        at_holm = stats.detectable_difference(c.std, c.test.n, analysis.test_train_ratio, alpha=0.05 / 3)
        assert c.detectable == pytest.approx(at_holm)
        assert c.detectable > stats.detectable_difference(c.std, c.test.n, analysis.test_train_ratio)
    md = report(numbers_dir, "--format", "md", "--output", "-").output
    assert "p < 0.05" in md and "&lt;" not in md and "&amp;" not in md


def test_markdown_export_renders_as_a_table(numbers_dir):
    result = report(numbers_dir, "--format", "md")
    assert result.exit_code == 0
    text = (numbers_dir / "report.md").read_text()
    html = markdown.markdown(text.split("\n## ")[0], extensions=["tables"])  # before any plugin section's table
    assert html.count("<table>") == 2, "the leaderboard and the verdicts"
    assert html.count("<tr>") == (1 + 4) + (1 + 3)
    assert "<th>Variant</th>" in html and "baseline (reference)" in html
    assert text.startswith("4 variants of synthetic-oct, compared by 3-fold cross-validation × 1 seed")
    for header in ("CV balanced acc.", "CV macro F1", "CV macro AUC", "Test AUC (ensemble) [95% CI]", "McNemar"):
        assert header in text, header
    assert "corrected t p raw (Holm)" in text and "Changes vs reference" in text and "**" in text


def test_csv_and_json_exports(numbers_dir):
    assert report(numbers_dir, "--format", "csv").exit_code == 0
    with open(numbers_dir / "leaderboard.csv") as handle:
        leaderboard = list(csv.DictReader(handle))
    with open(numbers_dir / "cells.csv") as handle:
        cells = list(csv.DictReader(handle))
    assert [r["variant"] for r in leaderboard] == ["baseline", "flip", "smote", "class-weights"]
    assert len(cells) == 4 * 3 * 2  # variants x folds x (held-out, test)
    out = numbers_dir / "x.json"
    assert report(numbers_dir, "--format", "json", "--output", out).exit_code == 0
    payload = json.loads(out.read_text())
    assert payload["reference"] == "baseline" and len(payload["leaderboard"]) == 4
    smote = next(r for r in payload["leaderboard"] if r["variant"] == "smote")
    assert smote["delta_accuracy"] is not None and 0 <= smote["p_corrected_t_holm"] <= 1
    assert smote["p_worse"] + smote["p_equivalent"] + smote["p_better"] == pytest.approx(1)
    assert smote["detectable_delta"] > 0 and smote["test_delta_auc"] is not None and 0 <= smote["p_auc_holm"] <= 1
    assert smote["mcnemar_only_this"] >= 0 and smote["test_auc_method"] == "paired bootstrap"
    # every metric's verdict raw and adjusted, per-class test AUC and rates with their counts, the figures' data
    for metric in ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro"):
        assert 0 <= smote[f"p_{metric}_corrected_t"] <= smote[f"p_{metric}_corrected_t_holm"] <= 1
    assert smote["p_delong[normal]"] is not None and smote["normal_sensitivity_n"] > 0
    assert smote["changes"] == "+smote" and smote["parameters"] > 0
    assert "reference: baseline" in payload["summary"] and payload["design"] == {"folds": 3, "seeds": 1}
    assert set(payload["confusion"]["smote"]) == {"test ensemble", "CV pool"}
    assert sum(map(sum, payload["confusion"]["smote"]["CV pool"])) == 240 + 40  # each pool image once per seed
    assert len(payload["roc"]["smote"]["classes"]) == 4
    assert "p_delong[normal]" in leaderboard[0], "every CSV row has every column"


@pytest.mark.slow
def test_merging_runs_keys_variants_by_run(numbers_dir, tmp_path):
    result = report(numbers_dir, numbers_dir, "--format", "json", "--output", tmp_path / "merged.json")
    assert result.exit_code == 0
    names = [r["variant"] for r in json.loads((tmp_path / "merged.json").read_text())["leaderboard"]]
    assert names[:2] == ["out/baseline", "out/flip"] and len(names) == 8
    assert report(numbers_dir, numbers_dir, "--output", tmp_path / "merged.html").exit_code == 0


@pytest.mark.slow
def test_different_datasets_make_a_study_that_says_what_it_cannot_test(numbers_dir, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(SUITE.replace("n_train: 240", "n_train: 200"))
    run_suite(other, out=tmp_path / "other", progress=False, overrides=["variants=[{name: baseline}]"])
    result = report(numbers_dir, tmp_path / "other", "--output", tmp_path / "study.html")
    assert result.exit_code == 0
    html = (tmp_path / "study.html").read_text()
    assert "Rank tests need at least two datasets and two variants" in html
    assert "Not in every dataset" in html and "critical difference diagram" not in html


def _study_block(tmp_path, name, seed):
    suite = tmp_path / f"{name}.yaml"
    text = SUITE.replace("name: report-check", f"name: {name}")
    text = text.replace("n_train: 240, n_val: 40, n_test: 60}", f"n_train: 160, n_val: 40, n_test: 40, seed: {seed}}}")
    suite.write_text(text.replace("folds: 3", "folds: 2").replace("epochs: 2", "epochs: 1"))
    assert run_suite(suite, out=tmp_path / name, progress=False).failed == 0
    return tmp_path / name


@pytest.mark.slow
def test_a_study_over_three_datasets_ranks_variants_with_a_critical_difference_diagram(numbers_dir, tmp_path):
    others = [_study_block(tmp_path, f"data{seed}", seed) for seed in (1, 2)]
    out = tmp_path / "study.html"
    assert report(numbers_dir, *others, "--output", out).exit_code == 0
    html = unescape(out.read_text())
    for text in (
        "Friedman's test of the ranks over 3 datasets: exact permutation p = ",
        "over all 13,824 ways the datasets could rank the variants",
        "average rank",
        'alt="critical difference diagram"',
        "Holm-adjusted",
        # a study this small says what it can and cannot show
        "A study of 3 datasets is small: the smallest p-value Friedman's test can give is 0.00174",
        "It cannot show that variants are equivalent",
    ):
        assert text in html, text
    assert "p = 0.000" not in html and "1 seeds" not in html and "1 seed," in html
    assert "Iman and Davenport" not in html, "not where its approximation does not hold"
    assert "synthetic-oct (out)" in html and "synthetic-oct (data1)" in html, "blocks named after their folders"
    payload = json.loads(report(numbers_dir, *others, "--format", "json", "--output", "-").output)
    assert payload["datasets"] and len(payload["datasets"]) == 3 and payload["friedman"]["critical_difference"] > 0
    assert payload["friedman"]["method"] == "exact" and 0 < payload["friedman"]["p"] <= 1
    assert [v["variant"] for v in payload["variants"]] == ["baseline", "flip", "smote", "class-weights"]
    reference = payload["variants"][0]
    assert reference["reference"] and reference["p_rank_vs_reference"] is None
    assert all(0 <= v["p_rank_vs_reference_holm"] <= 1 for v in payload["variants"][1:])
    md = report(numbers_dir, *others, "--format", "md", "--output", "-")
    assert md.exit_code == 0 and "average rank" in md.output and "exact permutation p" in md.output
    assert "A study of 3 datasets is small" in md.output and "&lt;" not in md.output
    assert report(numbers_dir, others[0], others[0]).exit_code == 2, "two folders of one dataset in a study"


def test_positive_class_and_rope_are_report_options(numbers_dir, tmp_path):
    result = report(numbers_dir, "--positive-class", "drusen", "--output", tmp_path / "r.html")
    assert result.exit_code == 2 and "binary" in result.output
    payload = json.loads(report(numbers_dir, "--format", "json", "--rope", "0.2", "--output", "-").output)
    flip = next(r for r in payload["leaderboard"] if r["variant"] == "flip")
    assert flip["rope"] == 0.2 and flip["p_equivalent"] > 0.5


def _as_version_one(store_path):
    """Rewrite a store as octbench's first schema wrote it: float32 probabilities in a 'probs' column."""
    import sqlite3

    import numpy as np

    from octbench.store import from_blob, to_blob

    conn = sqlite3.connect(store_path)
    rows = conn.execute("SELECT cell_id, split, scores FROM predictions").fetchall()
    conn.execute("ALTER TABLE predictions DROP COLUMN score_kind")
    conn.execute("ALTER TABLE predictions RENAME COLUMN scores TO probs")
    conn.execute("ALTER TABLE cells DROP COLUMN settings")
    for cell_id, split, blob in rows:
        logits = from_blob(blob).astype(np.float64)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
        conn.execute("UPDATE predictions SET probs=? WHERE cell_id=? AND split=?", (to_blob(probs), cell_id, split))
    conn.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    conn.commit()
    conn.close()


@pytest.mark.slow
def test_stores_written_by_the_first_schema_still_report_and_resume(numbers_dir, tmp_path):
    import hashlib
    import shutil

    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(numbers_dir / "results.sqlite", old / "results.sqlite")
    _as_version_one(old / "results.sqlite")
    before = hashlib.md5((old / "results.sqlite").read_bytes()).hexdigest()
    result = report(old, "--format", "json", "--output", "-")
    assert result.exit_code == 0, result.output
    assert hashlib.md5((old / "results.sqlite").read_bytes()).hexdigest() == before, "reading changed the store"
    assert json.loads(result.output)["leaderboard"][2]["test_delta_auc"] is not None
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    summary = run_suite(suite, out=old, progress=False, overrides=["cv.seeds=[0, 1]"])
    assert summary.failed == 0 and summary.done == 12, "the first seed's cells were kept, the second's added"
    assert (old / "report.html").exists()


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_real_binary_dataset_gets_every_verdict_and_unsaturated_scores(shared_data, tmp_path):
    import numpy as np

    from octbench.cell.scores import Scores
    from octbench.store import Store

    suite = tmp_path / "breast.yaml"
    suite.write_text(
        "name: breast\ndataset: breastmnist\ncv: {folds: 3, seeds: [0]}\n"
        "train: {epochs: 3, batch_size: 32, device: cpu}\ndefaults: {model: seed-cnn}\n"
        "variants:\n  - name: baseline\n  - {name: flip, augmenters: [{name: batch-augment, hflip: 0.5}]}\n"
    )
    out = tmp_path / "out"
    assert run_suite(suite, out=out, data_dir=str(shared_data), progress=False).failed == 0
    html = (out / "report.html").read_text()
    for text in (
        "P(worse / ≈ / better)",
        "DeLong",
        "detectable Δ",
        "sensitivity",
        "specificity",
        "PPV",
        "NPV",
        "Wilson",
        'alt="reliability diagram"',
        "Positive class: <strong>malignant</strong>",
    ):
        assert text in html, text
    store = Store(out / "results.sqlite", create=False)
    cells = [r[0] for r in store.conn.execute("SELECT id FROM cells")]
    for cell in cells:
        for split in ("heldout", "test"):
            stored = store.predictions(cell, split)
            assert stored["kind"] == "logits" and stored["scores"].dtype == np.float32
            assert np.isfinite(stored["scores"]).all()
            # the scores an AUC ranks by tie exactly where the float32 logits tie, nowhere else, and never saturate
            odds = Scores.from_logits(stored["scores"]).log_odds[:, 1]
            gaps = stored["scores"][:, 1].astype(np.float64) - stored["scores"][:, 0]
            assert len(np.unique(odds)) == len(np.unique(gaps)) and np.isfinite(odds).all()
            probs = Scores.from_logits(stored["scores"]).probs
            assert not np.any((probs == 0) | (probs == 1)), "saturated probabilities in a stored cell"
    store.close()


def test_ensembles_of_different_sizes_are_named_where_they_are_compared(numbers_dir, tmp_path):
    """A variant with a failed cell has a smaller test-split ensemble: the summary stated one N for all."""
    copy = tmp_path / "copy"
    shutil.copytree(numbers_dir, copy)
    with sqlite3.connect(copy / "results.sqlite") as conn:
        (cell,) = conn.execute("SELECT id FROM cells WHERE variant = 'smote' ORDER BY fold LIMIT 1").fetchone()
        conn.execute("UPDATE cells SET status = 'failed', error = 'out of memory' WHERE id = ?", (cell,))
    result = CliRunner().invoke(cli, ["report", str(copy), "--format", "md", "--output", str(tmp_path / "md")])
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "md").read_text()
    assert "(ensembles of 3 fold models, but smote's of 2 (failed cells): a difference there mixes" in markdown
    smote = next(line for line in markdown.splitlines() if line.startswith("| smote |"))
    assert "(2 fold models)" in smote
    assert CliRunner().invoke(cli, ["report", str(copy)]).exit_code == 0
    page = (copy / "report.html").read_text()
    assert page.count(">2 fold models</span>") == 1
