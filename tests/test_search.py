"""Nested hyperparameter search (octbench.cell.search): the suite's tune block, trials inside the folds, a kill and a
resume that never repeat a finished trial, and the report's tuning section."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from octbench.cell import search
from octbench.cell.metrics import higher_is_better
from octbench.cli import cli
from octbench.errors import SuiteError
from octbench.plan import folds
from octbench.plugins import PluginHost
from octbench.suite import Tune, resolve_variants
from octbench.suite.file import parse_suite
from tests.conftest import TINY_DATASET, cells, spy_plugin_path, wait_for
from tests.plugins.spies import POOL, TEST, read_log

HEAD = f"""
name: tuned
dataset: {TINY_DATASET}
cv: {{folds: 2, seeds: [0], val_fraction: 0.2}}
train: {{epochs: 1, batch_size: 32, optimizer: {{name: adam, lr: 0.003}}, device: cpu}}
defaults: {{model: {{name: cnn, widths: [8, 16], hidden: 16}}}}
"""


def suite_text(tune: str, variants: str, head: str = HEAD) -> str:
    return (
        textwrap.dedent(head) + textwrap.dedent(tune) + "variants:\n" + textwrap.indent(textwrap.dedent(variants), "  ")
    )


TUNE = """
tune:
  trials: 3
  space:
    train.optimizer.lr: {log_uniform: [0.0003, 0.03]}
    clahe.clip_limit: {uniform: [1, 4]}
"""


def test_each_variant_searches_the_keys_that_apply_to_it_with_its_own_budget():
    suite = parse_suite(
        suite_text(
            TUNE,
            """
            - name: baseline
            - {name: clahe, preprocessors: [clahe]}
            - {name: longer, preprocessors: [clahe], tune: {trials: 5, space: {model.hidden: {int: [8, 32]}}}}
            - {name: untuned, preprocessors: [clahe], tune: false}
            """,
        )
    )
    tunes = {v.name: v.tune for v in resolve_variants(suite)}
    assert list(tunes["baseline"].space) == ["train.optimizer.lr"]  # no clahe in the baseline: not searched there
    assert list(tunes["clahe"].space) == ["train.optimizer.lr", "clahe.clip_limit"]
    assert tunes["longer"].trials == 5 and "model.hidden" in tunes["longer"].space
    assert tunes["untuned"] is None and tunes["clahe"].trials == 3
    senses = higher_is_better(PluginHost.load())
    assert search.direction(tunes["clahe"], senses) == "minimize"  # loss, by default


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("{train.optimizer.lr: {uniform: [1, 2], int: [1, 2]}}", "give exactly one of"),
        ("{train.optimizer.lr: {uniform: [2, 1]}}", "the low end must be below the high end"),
        ("{train.optimizer.lr: {log_uniform: [0, 1]}}", "both ends must be above 0"),
        ("{train.device: {choice: [cpu, cuda]}}", "cannot be searched"),
        ("{train.compile: {choice: [true, false]}}", "says where or how a cell runs, not what it learns"),
        ("{lr: {uniform: [1, 2]}}", "should be train.<setting>"),
        ("{clahee.clip_limit: {uniform: [1, 2]}}", "clahee.clip_limit names a technique no variant uses"),
    ],
)
def test_a_bad_search_is_one_clear_error(space, message):
    text = suite_text(f"tune: {{trials: 2, space: {space}}}\n", "- {name: clahe, preprocessors: [clahe]}\n")
    with pytest.raises(SuiteError, match=message):
        resolve_variants(parse_suite(text))


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        ("tune: {trials: 2, metric: acc, space: {clahe.clip_limit: {uniform: [1, 2]}}}", "tune.metric: 'acc' is not"),
        ("tune: {trials: 2, space: {clahe.clip_limit: {uniform: [-1, 2]}}}", "clahe.clip_limit = -1.0 is not a valid"),
        ("tune: {trials: 2, space: {train.batch_size: {int: [0, 8]}}}", "train.batch_size = 0 is not a valid"),
        ("tune: {trials: 2, space: {train.optimizer.name: {choice: [adam, adamm]}}}", "optimizer.name = 'adamm' is"),
        (
            "tune: {trials: 2, space: {clahe.tile_grid: {uniform: [3, 10]}}}",
            "clahe.tile_grid = 6.5 is not a valid setting for variant 'clahe': The 'tile_grid' parameter of clahe "
            "must be a valid integer, got a number with a fractional part. Got 6.5 instead. (uniform draws "
            "fractions: int: [3, 10] draws whole numbers)",
        ),
        ("tune: {trials: 2, space: {train.epochs: {log_uniform: [1, 4]}}}", "train.epochs = 2.25 is not a valid"),
    ],
)
def test_a_search_that_could_not_run_is_refused_before_any_cell_naming_its_line(tmp_path, tune, message):
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text(tune + "\n", "- {name: clahe, preprocessors: [clahe]}\n"))
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert f"{path}:7:" in result.output  # the tune block's line
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("key", "variant", "why"),
    [
        (
            "tta.shift: {int: [0, 2]}",
            "{name: tta, regularizers: [tta]}",
            "tta.shift cannot change a trial's score in variant 'tta': 'tta' changes only how the held-out fold and "
            "the test split are evaluated (test views), and a trial is scored on the inner validation split without "
            "them; searching it would pick a setting at random and cost the trials.",
        ),
        (
            "train.optimizer.lr: {log_uniform: [0.0001, 0.01]}",
            "{name: own-lr, regularizers: [{name: optimizer, algorithm: sgd, lr: 0.1}]}",
            "train.optimizer.lr cannot change a trial's score in variant 'own-lr': regularizer 'optimizer' sets the "
            "optimizer's lr itself, so no searched value reaches training",
        ),
    ],
)
def test_a_key_that_cannot_change_a_trials_score_is_refused_in_one_line(tmp_path, key, variant, why):
    """Trials are scored without test views, and a regularizer may set the optimizer's lr itself: searching either
    drew a setting at random for N+1 trainings a cell. The search's other keys stay searchable elsewhere."""
    path = tmp_path / "suite.yaml"
    path.write_text(suite_text(f"tune: {{trials: 2, space: {{{key}}}}}\n", f"- name: baseline\n- {variant}\n"))
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and why in lines[0], result.output
    assert f"{path}:7:" in lines[0]


LOWER = Path(__file__).parent / "plugins" / "lower.py"


def test_a_direction_that_contradicts_the_metric_is_refused(tmp_path):
    """A lower-is-better metric searched with direction: maximize would keep each cell's worst trial."""
    path = tmp_path / "suite.yaml"
    head = HEAD + f"plugins: [{LOWER}]\n"
    tune = "tune: {trials: 2, metric: error-rate, direction: maximize, space: {clahe.clip_limit: {uniform: [1, 2]}}}\n"
    path.write_text(suite_text(tune, "- {name: clahe, preprocessors: [clahe]}\n", head))
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 2, result.output
    assert "tune.direction: 'error-rate' is lower-is-better, so to maximize it would keep each cell's worst" in (
        result.output.replace("\n", " ")
    )
    assert "Traceback" not in result.output
    senses = higher_is_better(PluginHost.load([LOWER]))
    tune = parse_suite(suite_text(tune.replace("direction: maximize, ", ""), "- name: a\n", head)).tune
    assert search.direction(tune, senses) == "minimize"


@pytest.mark.slow
def test_a_search_on_a_lower_is_better_metric_keeps_its_lowest_trial(tmp_path):
    """End to end: each cell's chosen setting is its trial with the lowest error rate (it kept the highest)."""
    from octbench.runner import run_suite

    path = tmp_path / "suite.yaml"
    head = HEAD + f"plugins: [{LOWER}]\n"
    space = "{train.optimizer.lr: {log_uniform: [0.00001, 0.1]}}"
    tune = f"tune: {{trials: 4, sampler: random, metric: error-rate, space: {space}}}\n"
    path.write_text(suite_text(tune, "- name: baseline\n", head))
    summary = run_suite(path, out=tmp_path / "out", progress=False, check=False)
    assert (summary.done, summary.failed) == (2, 0)
    for record in (c["search"] for c in stored_settings(tmp_path / "out")):
        values = [t["value"] for t in record["history"] if t["state"] == "complete"]
        assert record["direction"] == "minimize" and record["score"] == min(values) < max(values), record


def test_a_setting_is_applied_where_its_key_points():
    suite = parse_suite(suite_text(TUNE, "- {name: clahe, preprocessors: [clahe, {name: clahe, tile_grid: 4}]}\n"))
    variant = resolve_variants(suite)[0]
    params = {"train.optimizer.lr": 0.01, "train.optimizer.momentum": 0.9, "clahe.clip_limit": 3.0, "model.hidden": 8}
    tuned_suite, tuned = search.apply(suite, variant, params)
    assert tuned_suite.train.optimizer.lr == 0.01 and tuned_suite.train.optimizer.params == {"momentum": 0.9}
    assert [ref.params for ref in tuned.preprocessors] == [{"clip_limit": 3.0}, {"clip_limit": 3.0, "tile_grid": 4}]
    assert tuned.model.params["hidden"] == 8
    assert suite.train.optimizer.lr == 0.003 and variant.preprocessors[0].params == {}  # the originals unchanged


def read_study(journal, name):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=name, storage=storage)


def study_names(journal):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return sorted(
        s.study_name for s in optuna.get_all_study_summaries(JournalStorage(JournalFileBackend(str(journal))))
    )


@pytest.mark.slow
def test_a_tuned_suite_runs_reports_and_exports_its_choices_and_a_rerun_trains_no_trial(tmp_path):
    from octbench.runner import run_suite

    path = tmp_path / "tuned.yaml"
    path.write_text(suite_text(TUNE, "- name: baseline\n- {name: clahe, preprocessors: [clahe]}\n"))
    checked = CliRunner().invoke(cli, ["check", str(path)])
    assert "2 of 2 variants are tuned inside each of their 2 cells with 3 trials: 16 trainings" in checked.output
    out = tmp_path / "out"
    summary = run_suite(path, out=out, progress=False)
    assert (summary.done, summary.failed) == (4, 0)
    names = study_names(out / search.JOURNAL)
    assert len(names) == 4  # one study per cell
    for name in names:
        trials = read_study(out / search.JOURNAL, name).trials
        assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    page = (out / "report.html").read_text()
    assert '<h2 id="tuning">Tuning</h2>' in page and "Each variant was tuned inside every fold with 3 trials" in page
    assert "clahe.clip_limit" in page and '<a href="#tuning">Tuning</a>' in page  # in the page's navigation

    result = CliRunner().invoke(cli, ["report", str(out), "--format", "csv", "--output", str(tmp_path / "csv")])
    assert result.exit_code == 0, result.output
    header = (tmp_path / "csv" / "cells.csv").read_text().splitlines()[0]
    assert "tuned train.optimizer.lr" in header and "tuned clahe.clip_limit" in header
    tuning = (tmp_path / "csv" / "tuning.csv").read_text().splitlines()  # the Tuning section's table
    assert tuning[0].startswith("variant,trials_per_cell,sampler") and len(tuning) == 3
    result = CliRunner().invoke(cli, ["report", str(out), "--format", "md", "--figures", str(tmp_path / "figs")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "figs" / "tuning-search-curves.svg").exists()  # drawn through the one figure writer

    again = run_suite(path, out=out, progress=False)
    assert again.done == 0 and again.skipped == 4
    assert all(len(read_study(out / search.JOURNAL, n).trials) == 3 for n in names), "a rerun trained a trial"


@pytest.mark.slow
def test_a_verdict_against_an_untuned_reference_is_marked_not_equal_budget_everywhere(tmp_path):
    """A sentence said budgets differ; the leaderboard and every export now mark the verdict itself."""
    from octbench.runner import run_suite

    path = tmp_path / "tuned.yaml"
    tune = "tune: {trials: 2, sampler: random, space: {train.optimizer.lr: {log_uniform: [0.001, 0.01]}}}\n"
    path.write_text(suite_text(tune, "- {name: baseline, tune: false}\n- {name: clahe, preprocessors: [clahe]}\n"))
    out = tmp_path / "out"
    assert run_suite(path, out=out, progress=False, check=False).done == 4
    note = "not equal-budget: clahe tuned with 2 trials per cell, the reference baseline untuned"
    page = (out / "report.html").read_text()
    assert f'<span class="mark-budget" title="{note}">‡</span>' in page
    assert page.count('class="mark-budget"') == 2  # the mark and its legend
    for fmt in ("csv", "md", "latex"):
        result = CliRunner().invoke(cli, ["report", str(out), "--format", fmt, "--output", str(tmp_path / fmt)])
        assert result.exit_code == 0, result.output
    with open(tmp_path / "csv" / "leaderboard.csv") as handle:
        rows = {r["variant"]: r for r in csv.DictReader(handle)}
    assert (rows["clahe"]["equal_budget"], rows["clahe"]["budget_note"]) == ("False", note)
    assert (rows["baseline"]["equal_budget"], rows["baseline"]["budget_note"]) == ("True", "")
    markdown = (tmp_path / "md").read_text()
    assert "| clahe ‡ |" in markdown and "‡: not compared at an equal tuning budget (clahe tuned with 2" in markdown
    assert r"clahe \ddag" in (tmp_path / "latex").read_text()


def test_the_summary_counts_failed_trials_per_variant():
    from octbench.report import tuned
    from octbench.report.collect import Results

    lr = {"log_uniform": [0.0001, 0.01]}
    failing = tuned_variant("a", 2, [{"lr": 0.001}] * 2, {"lr": lr})
    for cell in failing.cells:
        history = cell.settings["search"]["history"]
        history.append({**history[0], "number": 1, "value": None, "state": "fail", "error": "out of memory"})
    text = tuned.sentence(Results([], [failing, tuned_variant("b", 2, [{"lr": 0.001}] * 2, {"lr": lr})]))
    assert text.endswith("Failed trials used up part of a budget: a 2 of 4 (see Tuning).")


SPY_SUITE = """
name: spied-search
plugins: [{plugins}]
dataset: {{name: tagged}}
cv: {{folds: 3, seeds: [0], val_fraction: 0.2}}
train: {{epochs: 1, batch_size: 16, device: cpu}}
defaults: {{model: {{name: cnn, widths: [4], hidden: 8}}}}
executor: {{stack: 1}}
tune: {{trials: 2, sampler: random, space: {{train.optimizer.lr: {{log_uniform: [0.001, 0.01]}}}}}}
variants:
  - name: spied
    preprocessors: [{{name: spy-preprocessor, log: {log}}}, {{name: spy-resampler, log: {log}}}]
    augmenters: [{{name: spy-augmenter, log: {log}}}]
"""


@pytest.mark.slow
def test_trials_never_see_held_out_or_test_images_and_the_tuned_cell_sees_them_once(tmp_path):
    from octbench.runner import run_suite

    log = tmp_path / "spy.jsonl"
    path = tmp_path / "suite.yaml"
    path.write_text(SPY_SUITE.format(plugins=spy_plugin_path(), log=log))
    summary = run_suite(path, out=tmp_path / "out", progress=False, check=False)
    assert (summary.done, summary.failed) == (3, 0)

    # the log, cut at each fit: per cell, two trials and then the tuned cell, in order
    groups: list[list[dict]] = []
    for event in read_log(log):
        if event["event"] == "fit":
            groups.append([])
        groups[-1].append(event)
    assert len(groups) == 3 * 3
    labels = np.arange(120) % 3
    for fold in range(3):
        train, held = folds.fold_indices(labels, 3, 0, fold)
        inner, val = folds.inner_split(train, labels, 0.2, 0, fold)
        *trials, final = groups[fold * 3 : fold * 3 + 3]
        for group in trials:
            for event in group:
                origins = {origin for origin, _, _ in event["ids"]}
                seen = {index for _, index, synthetic in event["ids"] if not synthetic}
                assert origins == {POOL}, f"a trial's {event['event']} saw official test images"
                assert not seen & set(held.tolist()), f"a trial's {event['event']} saw held-out images"
                allowed = inner if event["event"] in ("fit", "resample", "augment") else np.concatenate([inner, val])
                assert seen <= set(allowed.tolist())
        transforms = [e for e in final if e["event"] == "transform"]
        tested = [e for e in transforms if {o for o, _, _ in e["ids"]} == {TEST}]
        held_out = [e for e in transforms if {i for o, i, _ in e["ids"] if o == POOL} == set(held.tolist())]
        assert len(tested) == 1 and len(held_out) == 1, "the tuned cell is evaluated once on each split"


@pytest.mark.slow
def test_a_killed_search_resumes_at_its_next_trial_and_never_repeats_a_finished_one(tmp_path):
    from octbench.runner import run_suite

    path = tmp_path / "suite.yaml"
    tune = "tune: {trials: 8, space: {train.optimizer.lr: {log_uniform: [0.001, 0.01]}}}\n"
    head = HEAD + f"plugins: [{spy_plugin_path()}]\nexecutor: {{stack: 1}}\n"
    path.write_text(suite_text(tune, "- {name: baseline, regularizers: [{name: slow-down, seconds: 0.6}]}\n", head))
    out = tmp_path / "out"
    journal = out / search.JOURNAL

    def first_cell(names):  # variant/config hash/seed/fold
        return [n for n in names if n.startswith("baseline/") and n.endswith("/fold 0")]

    def finished_in_first_cell() -> int:
        if not journal.exists():
            return 0
        names = first_cell(study_names(journal))
        return sum(t.state.name == "COMPLETE" for t in read_study(journal, names[0]).trials) if names else 0

    command = [sys.executable, "-m", "octbench", "run", str(path), "--out", str(out), "--no-progress", "--no-check"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: finished_in_first_cell() >= 2, process)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    (name,) = first_cell(study_names(journal))
    before = [(t.number, t.params, t.value) for t in read_study(journal, name).trials if t.state.name == "COMPLETE"]
    assert 2 <= len(before) < 8, "the kill should land mid-search"
    assert cells(out) == [] or all(c[2] != 0 for c in cells(out)), "the first cell was not finished"

    summary = run_suite(path, out=out, progress=False, check=False)
    assert (summary.done, summary.failed) == (2, 0)
    study = read_study(journal, name)
    complete = [(t.number, t.params, t.value) for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 8 and complete[: len(before)] == before, "a finished trial was trained again"
    record = next(c for c in stored_settings(out) if c["fold"] == 0)["search"]
    assert record["resumed_after"] == len(before) and len(record["history"]) == 8


@pytest.mark.slow
def test_a_rerun_retries_trials_that_failed_and_fresh_forgets_every_trial(tmp_path):
    """Every trial of a cell failed (out of memory, say): the cell failed, and a rerun found its budget used up and
    failed it again at once. A rerun tries those trials afresh; ``--fresh`` deletes the journal with the store, so
    a fresh run draws new trials rather than reuse the old choices."""
    import time

    from octbench.runner import run_suite

    flag = tmp_path / "busy-gpu"
    flag.touch()
    path = tmp_path / "suite.yaml"
    head = HEAD + f"plugins: [{spy_plugin_path()}]\nexecutor: {{stack: 1}}\n"
    tune = "tune: {trials: 2, sampler: random, space: {train.optimizer.lr: {log_uniform: [0.001, 0.01]}}}\n"
    path.write_text(
        suite_text(tune, f"- {{name: baseline, regularizers: [{{name: fails-while, flag: {flag}}}]}}\n", head)
    )
    out = tmp_path / "out"
    first = run_suite(path, out=out, progress=False, check=False)
    assert (first.done, first.failed) == (0, 2)
    flag.unlink()
    second = run_suite(path, out=out, progress=False, check=False)
    assert (second.done, second.failed) == (2, 0), "the failed trials were counted as the cells' whole budget"
    for record in (c["search"] for c in stored_settings(out)):
        assert [t["state"] for t in record["history"]] == ["complete", "complete"]

    names = study_names(out / search.JOURNAL)
    started = time.time()
    fresh = run_suite(path, out=out, progress=False, check=False, fresh=True)
    assert (fresh.done, fresh.failed) == (2, 0)
    for name in names:
        trials = read_study(out / search.JOURNAL, name).trials
        assert len(trials) == 2 and all(t.datetime_start.timestamp() >= started for t in trials), "old trials reused"


@pytest.mark.serial
@pytest.mark.slow
def test_train_timeout_is_each_cells_own_in_a_stack_of_tuned_cells(tmp_path):
    """A stack of four tuned cells searches one cell after another, then trains them together. Each trial sleeps
    2.5 s; the stack's training sleeps 2.5 s per member, one member after another, and every member shares it. So a
    cell takes about 17.5 s of its own (three trials, 7.5 s, and the shared 10 s) and the stack about 40 s. Under one
    clock for the stack every cell failed at a 30-s limit; each cell's own limit holds, with 12 s to spare for the
    four trainings' own work on a loaded machine."""
    from octbench.runner import run_suite

    path = tmp_path / "suite.yaml"
    head = HEAD.replace("folds: 2", "folds: 4") + f"plugins: [{spy_plugin_path()}]\nexecutor: {{stack: 4}}\n"
    tune = "tune: {trials: 3, sampler: random, space: {train.optimizer.lr: {log_uniform: [0.001, 0.01]}}}\n"
    path.write_text(suite_text(tune, "- {name: baseline, regularizers: [{name: slow-down, seconds: 2.5}]}\n", head))
    summary = run_suite(path, out=tmp_path / "out", progress=False, check=False, overrides=["train.timeout=30"])
    assert (summary.done, summary.failed) == (4, 0), [c[4] for c in cells(tmp_path / "out")]
    assert {s["stack_size"] for s in stored_settings(tmp_path / "out")} == {4}


@pytest.mark.slow
def test_variants_that_search_a_parameter_are_offered_the_same_candidates_in_every_fold(tmp_path):
    """Common random numbers: the sampler was seeded by each variant's config hash, so baseline and clahe were
    offered different learning rates; now each (seed, fold) offers every variant the same ones, whatever else it
    searches (clahe also draws clip_limit)."""
    from octbench.runner import run_suite

    path = tmp_path / "suite.yaml"
    tune = TUNE.replace("trials: 3", "trials: 3\n  sampler: random")
    path.write_text(suite_text(tune, "- name: baseline\n- {name: clahe, preprocessors: [clahe]}\n"))
    summary = run_suite(path, out=tmp_path / "out", progress=False, check=False)
    assert (summary.done, summary.failed) == (4, 0)
    drawn: dict = {}
    for name in study_names(tmp_path / "out" / search.JOURNAL):
        variant, fold = name.split("/")[0], name.split("/")[-1]
        trials = read_study(tmp_path / "out" / search.JOURNAL, name).trials
        drawn.setdefault(fold, {})[variant] = [t.params["train.optimizer.lr"] for t in trials]
    assert set(drawn) == {"fold 0", "fold 1"}
    for fold, by_variant in drawn.items():
        assert by_variant["baseline"] == by_variant["clahe"], fold
    assert drawn["fold 0"]["baseline"] != drawn["fold 1"]["baseline"], "each fold draws its own"


def test_tpe_starts_with_the_shared_draws_and_a_budget_can_scale_with_the_space():
    """TPE's start-up trials are the shared random draws; its later proposals follow each variant's own scores.
    trials_per_parameter gives each variant trials in proportion to the keys it searches."""
    lr = {"log_uniform": [0.0001, 0.01]}
    drawn = []
    for space in ({"train.optimizer.lr": lr}, {"train.optimizer.lr": lr, "clahe.clip_limit": {"uniform": [1, 4]}}):
        tune = Tune(trials=6, space=space)
        seen: list[float] = []
        search.search(tune, "study", 7, lambda p, seen=seen: seen.append(p["train.optimizer.lr"]) or len(seen) % 3,
                      goal="minimize")  # fmt: skip
        drawn.append(seen)
    assert drawn[0][:3] == drawn[1][:3], "the three start-up trials (6 // 3, at least 3) are shared"
    suite = parse_suite(
        suite_text(
            "tune: {trials_per_parameter: 2, space: {train.optimizer.lr: {log_uniform: [0.001, 0.01]}, "
            "clahe.clip_limit: {uniform: [1, 4]}}}\n",
            "- name: baseline\n- {name: clahe, preprocessors: [clahe]}\n- {name: own, tune: {trials: 5}}\n",
        )
    )
    assert [v.tune.trials for v in resolve_variants(suite)] == [2, 4, 5]
    with pytest.raises(SuiteError, match="give trials or trials_per_parameter, not both"):
        parse_suite(suite_text("tune: {trials: 3, trials_per_parameter: 2, space: {train.epochs: {int: [1, 2]}}}\n",
                               "- name: baseline\n"))  # fmt: skip


def stored_settings(out):
    import json
    import sqlite3

    conn = sqlite3.connect(out / "results.sqlite")
    try:
        rows = conn.execute("SELECT fold, settings FROM cells WHERE status = 'done'").fetchall()
    finally:
        conn.close()
    return [{"fold": fold, **json.loads(settings)} for fold, settings in rows]


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_tuned_breastmnist_suite_runs_end_to_end(shared_data, tmp_path):
    from octbench.runner import run_suite

    path = tmp_path / "breast.yaml"
    path.write_text(
        textwrap.dedent(
            """
            name: breast-tuned
            dataset: {name: breastmnist}
            cv: {folds: 2, seeds: [0]}
            train: {epochs: 1, batch_size: 64, device: cpu}
            defaults: {model: {name: cnn, widths: [8, 16], hidden: 16}}
            tune: {trials: 2, metric: auc_macro, space: {train.optimizer.lr: {log_uniform: [0.0003, 0.01]}}}
            variants:
              - name: baseline
              - {name: clahe, preprocessors: [{name: clahe, clip_limit: 2.0}]}
            """
        )
    )
    summary = run_suite(path, out=tmp_path / "out", data_dir=str(shared_data), progress=False)
    assert (summary.done, summary.failed) == (4, 0)
    records = [c["search"] for c in stored_settings(tmp_path / "out")]
    assert all(r["metric"] == "auc_macro" and r["direction"] == "maximize" for r in records)
    assert all(0.0 <= r["score"] <= 1.0 for r in records)


def tuned_variant(key, trials, chosen, space=None):
    from octbench.report.collect import Cell, VariantResults

    def record(setting):
        history = [{"number": 0, "params": setting, "value": 0.5, "state": "complete", "error": "", "seconds": 1.0}]
        return {"trials": trials, "metric": "loss", "direction": "minimize", "sampler": "tpe", "chosen": setting,
                "score": 0.5, "resumed_after": 0, "seconds": 1.0, "history": history}  # fmt: skip

    cells = [
        Cell(0, fold, {}, {}, {}, [], {}, {}, settings={"search": record(setting)} if setting is not None else {})
        for fold, setting in enumerate(chosen)
    ]
    return VariantResults(key, key, "run", "variant", {"tune": {"space": space or {}}}, cells=cells)


def test_the_report_says_when_budgets_differ_and_when_a_choice_sits_at_an_end_of_its_range():
    from octbench.report import tuned
    from octbench.report.collect import Results

    lr = {"log_uniform": [0.0001, 0.01]}
    same = Results(
        [], [tuned_variant("a", 8, [{"lr": 0.001}] * 2, {"lr": lr}), tuned_variant("b", 8, [{"lr": 0.002}] * 2)]
    )
    assert tuned.sentence(same).startswith("Each variant was tuned inside every fold with 8 trials")
    differ = Results([], [tuned_variant("a", 8, [{"lr": 0.001}]), tuned_variant("b", 16, [{"lr": 0.001}]),
                          tuned_variant("c", 8, [None])])  # fmt: skip
    assert tuned.sentence(differ) == (
        "Tuning budgets differ: a 8 trials, b 16 trials; c not tuned, so differences mix the techniques with their "
        "search budgets."
    )
    clip = {"uniform": [1, 4]}
    thin = Results([], [tuned_variant("a", 20, [{"lr": 0.001}] * 2, {"lr": lr}),
                        tuned_variant("b", 20, [{"lr": 0.001, "clip": 2, "grid": 4}] * 2,
                                      {"lr": lr, "clip": clip, "grid": {"choice": [4, 8]}})])  # fmt: skip
    assert tuned.sentence(thin) == (
        "Each variant was tuned inside every fold with 20 trials, scored by inner-validation loss. Searches are "
        "unequal in trials per searched parameter: a 20 (20 for 1 parameter), b 6.67 (20 for 3 parameters); the "
        "thinner searches may understate their variants (tune.trials_per_parameter scales each budget with its space)."
    )
    page = tuned.render(tuned.searches(thin), None)
    assert "<th>searched parameters</th><th>trials per parameter</th>" in page and "<td>3</td><td>6.67</td>" in page
    even = Results([], [tuned_variant("a", 20, [{"lr": 0.001}], {"lr": lr}),
                        tuned_variant("b", 40, [{"lr": 0.001, "clip": 2}], {"lr": lr, "clip": clip})])  # fmt: skip
    assert "unequal" not in tuned.sentence(even), "20 for one parameter, 40 for two: equal per parameter"
    # 0.0001 and 0.0099 sit at the two ends of a log range, 0.001 in the middle: no end holds half the folds
    split = tuned.searches(
        Results([], [tuned_variant("a", 8, [{"lr": 0.0001}, {"lr": 0.0099}, {"lr": 0.001}], {"lr": lr})])
    )
    assert split[0].edges == []
    low = tuned.searches(
        Results([], [tuned_variant("a", 8, [{"lr": 0.0001}, {"lr": 0.00011}, {"lr": 0.001}], {"lr": lr})])
    )
    assert low[0].edges == [
        "a: lr was chosen at the low end of [0.0001, 0.01] in 2 of 3 folds; the best setting may lie beyond it: "
        "widen the range"
    ]
    page = tuned.render(
        tuned.searches(Results([], [tuned_variant("a", 8, [{"lr": 0.0001}, {"lr": 0.00011}], {"lr": lr})])), None
    )
    assert "widen the range" in page and "0.000105 [0.0001–0.00011]" in page
    assert tuned.searches(Results([], [tuned_variant("c", 8, [None])])) == []


@pytest.mark.slow
def test_worker_processes_share_one_journal_and_draw_the_settings_one_process_draws(tmp_path):
    """Cells in two worker processes write their studies to the same journal (Optuna's file lock); each cell's
    seeded search draws the same settings wherever it runs."""
    from octbench.runner import run_suite

    tune = "tune: {trials: 2, sampler: random, space: {train.optimizer.lr: {log_uniform: [0.001, 0.01]}}}\n"
    drawn = {}
    for executor in ("{stack: 1}", "{stack: 1, parallel: 2}"):
        path = tmp_path / "suite.yaml"
        path.write_text(suite_text(tune, "- name: baseline\n- {name: clahe, preprocessors: [clahe]}\n") +
                        f"executor: {executor}\n")  # fmt: skip
        out = tmp_path / executor.replace(" ", "")
        summary = run_suite(path, out=out, progress=False, check=False)
        assert (summary.done, summary.failed) == (4, 0)
        names = study_names(out / search.JOURNAL)
        assert len(names) == 4
        drawn[executor] = {
            name.split("/")[0] + name.split("/")[-1]: [t.params for t in read_study(out / search.JOURNAL, name).trials]
            for name in names
        }
    assert drawn["{stack: 1}"] == drawn["{stack: 1, parallel: 2}"]


def test_a_variants_changes_describe_its_search_in_words():
    """The leaderboard's 'changes vs reference' printed a tuned variant's whole search as a Python dict."""
    from octbench.report.variants import changes

    lr = {"log_uniform": [0.001, 0.01]}
    tuned = {"trials": 20, "space": {"train.optimizer.lr": lr, "clahe.clip_limit": {"uniform": [1, 4]}}}
    reference = {
        "model": {"name": "cnn"},
        "preprocessors": [],
        "tune": {"trials": 20, "space": {"train.optimizer.lr": lr}},
    }
    assert changes({**reference, "preprocessors": [{"name": "clahe"}], "tune": tuned}, reference) == ["+clahe"]
    assert changes({**reference, "tune": None}, reference) == ["untuned"]
    assert changes(reference, {**reference, "tune": None}) == ["tuned (20 trials)"]
    wider = {"trials": 40, "space": {"train.optimizer.lr": lr, "model.hidden": {"int": [8, 32]}}}
    assert changes({**reference, "tune": wider}, reference) == ["tune trials 20→40", "search +model.hidden"]
