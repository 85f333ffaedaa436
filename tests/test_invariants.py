"""The invariants of DESIGN.md, each tested on tiny data."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from octbench.cell.execute import CellTask, execute
from octbench.plan import folds
from octbench.plan.check import config_hash
from octbench.plan.preflight import check_suite
from octbench.plan.run import plan_run
from octbench.plugins import PluginHost
from octbench.report.collect import load
from octbench.runner import run_suite
from octbench.store import Store
from octbench.suite import resolve_variants
from octbench.suite.file import load_suite
from tests.conftest import spy_plugin_path, stored_metrics, wait_for
from tests.plugins.spies import POOL, read_log


def spy_suite(write_suite, log, folds_=3, seeds="[0, 1]"):
    return write_suite(
        f"""
        name: spies
        plugins: [{spy_plugin_path()}]
        dataset: {{name: tagged, n_pool: 120, n_test: 30}}
        cv: {{folds: {folds_}, seeds: {seeds}, val_fraction: 0.2, test_split: true}}
        train: {{epochs: 2, batch_size: 16, device: cpu}}
        defaults: {{model: {{name: cnn, widths: [4], hidden: 8}}}}
        variants:
          - name: baseline
          - name: spied
            preprocessors: [{{name: spy-preprocessor, log: {log}}}, {{name: spy-resampler, log: {log}}}]
            augmenters: [{{name: spy-augmenter, log: {log}}}]
        """
    )


def stored_cells(out):
    conn = sqlite3.connect(out / "results.sqlite")
    try:
        return conn.execute("SELECT id, variant, seed, fold, run_id, finished, config_hash FROM cells").fetchall()
    except sqlite3.OperationalError:  # the file exists but the run has not created the schema yet
        return []
    finally:
        conn.close()


@pytest.mark.slow
def test_nothing_fitted_resampled_or_augmented_sees_held_out_or_test_images(write_suite, tmp_path):
    log = tmp_path / "spy.jsonl"
    suite = spy_suite(write_suite, log)
    summary = run_suite(suite, out=tmp_path / "out", progress=False)
    assert summary.failed == 0 and summary.done == 12

    events = read_log(log)
    fits = [e for e in events if e["event"] == "fit"]
    resamples = [e for e in events if e["event"] == "resample"]
    augments = [e for e in events if e["event"] == "augment"]
    # first, the preflight trial fits and resamples a sample of the pool once, before any cell: no test image
    (trial_fit, *fits), (trial_resample, *resamples) = fits, resamples
    for event in (trial_fit, trial_resample):
        assert {origin for origin, _, _ in event["ids"]} == {POOL}, "the preflight trial saw official test images"
    assert len(fits) == len(resamples) == 6  # once per cell of the spied variant: 2 seeds x 3 folds
    labels = np.arange(120) % 3
    # reconstruct each cell's held-out fold and inner validation split independently of the runner
    for cell, (fit, resample) in enumerate(zip(fits, resamples, strict=True)):
        seed, fold = divmod(cell, 3)
        train_idx, held_idx = folds.fold_indices(labels, 3, seed, fold)
        inner, inner_val = folds.inner_split(train_idx, labels, 0.2, seed, fold)
        for event in (fit, resample):
            origins = {origin for origin, _, _ in event["ids"]}
            seen = {index for _, index, _ in event["ids"]}
            assert origins == {POOL}, "a fitted step saw official test images"
            assert seen == set(inner.tolist()), "a fitted step saw images outside the inner training part"
            assert not seen & set(held_idx.tolist())
            assert not seen & set(inner_val.tolist())
    augmented = [tuple(i) for e in augments for i in e["ids"]]
    assert all(origin == POOL for origin, _, _ in augmented), "a test image was augmented"
    assert any(synthetic for _, _, synthetic in augmented), "synthetic samples should be trained on"

    # synthetic samples never reach an evaluation set: evaluations are exactly the fold and the test split
    store = Store(tmp_path / "out" / "results.sqlite")
    for cell_id, _variant, seed, fold, *_ in stored_cells(tmp_path / "out"):
        _, held_idx = folds.fold_indices(labels, 3, seed, fold)
        held = store.predictions(cell_id, "heldout")
        test = store.predictions(cell_id, "test")
        assert held["indices"].tolist() == held_idx.tolist()
        assert len(test["y_true"]) == 30
    store.close()


@pytest.mark.slow
def test_the_largest_valid_seed_runs_its_cells_and_smaller_seeds_keep_their_folds(tiny_suite, tmp_path):
    """seed * 1000 + fold overflowed numpy's seed range above seed 4,294,966, failing every cell of a suite that
    check had passed; the seeds valid before keep their cell seeds (and so their inner splits) exactly."""
    assert [folds.cell_seed(seed, fold) for seed, fold in [(0, 0), (3, 2), (4_294_966, 49)]] == [
        0, 3002, 4_294_966_049
    ]  # fmt: skip
    big = folds.cell_seed(2**32 - 1, 1)
    assert 0 <= big < 2**32 and big != folds.cell_seed(2**32 - 1, 0)
    suite = tiny_suite("- name: baseline", seeds=f"[{2**32 - 1}]")
    summary = run_suite(suite, out=tmp_path / "out", progress=False)
    assert (summary.done, summary.failed) == (2, 0)


@pytest.mark.slow
def test_every_variant_of_a_seed_sees_the_same_folds(write_suite, tmp_path):
    suite = spy_suite(write_suite, tmp_path / "spy.jsonl")
    run_suite(suite, out=tmp_path / "out", progress=False)
    store = Store(tmp_path / "out" / "results.sqlite")
    held: dict = {}
    for cell_id, variant, seed, fold, *_ in stored_cells(tmp_path / "out"):
        held.setdefault((seed, fold), {})[variant] = store.predictions(cell_id, "heldout")["indices"].tolist()
    store.close()
    for (seed, fold), by_variant in held.items():
        assert by_variant["baseline"] == by_variant["spied"], f"variants saw different folds at seed {seed} fold {fold}"
    assert held[(0, 0)]["baseline"] != held[(1, 0)]["baseline"], "different seeds should give different folds"
    all_held = sorted(i for (seed, _), v in held.items() if seed == 0 for i in v["baseline"])
    assert all_held == list(range(120)), "each pool image is held out exactly once per seed"


@pytest.mark.slow
def test_kill_minus_nine_then_resume_loses_only_cells_in_flight(tiny_suite, tmp_path):
    gate = tmp_path / "gate"  # b's cells wait for it: the kill surely lands mid-run
    suite = tiny_suite(
        f"""
        - name: a
          regularizers: [{{name: slow-down, seconds: 0.4}}]
        - name: b
          regularizers: [{{name: slow-down, seconds: 0.1, until: '{gate}'}}]
        """,
        folds=3,
        extra=f"plugins: [{spy_plugin_path()}]\nexecutor: {{stack: 1}}",  # one commit per cell, so a kill splits them
        epochs=2,
    )
    out = tmp_path / "out"
    # --no-check: the preflight trial would wait at the gate too
    command = [sys.executable, "-m", "octbench", "run", str(suite), "--out", str(out), "--no-progress", "--no-check"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        held = Path(f"{gate}.waiting")
        wait_for(lambda: (out / "results.sqlite").exists() and len(stored_cells(out)) >= 1 and held.exists(), process)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    before = {(v, s, f): (i, finished) for i, v, s, f, _, finished, _ in stored_cells(out)}
    assert 1 <= len(before) < 6, f"expected a partial run, found {len(before)} cells"
    gate.touch()

    summary = run_suite(suite, out=out, progress=False)
    after = {(v, s, f): (i, finished) for i, v, s, f, _, finished, _ in stored_cells(out)}
    assert len(after) == 6, "every cell is stored exactly once"
    assert summary.skipped == len(before) and summary.done == 6 - len(before)
    for key, record in before.items():
        assert after[key] == record, f"finished cell {key} was retrained or rewritten"
    again = run_suite(suite, out=out, progress=False)
    assert again.done == 0 and again.skipped == 6


@pytest.mark.slow
def test_changed_configuration_reruns_and_fresh_starts_over(tiny_suite, tmp_path):
    suite = tiny_suite("- name: a")
    out = tmp_path / "out"
    first = run_suite(suite, out=out, progress=False)
    assert first.done == 2
    changed = run_suite(suite, out=out, overrides=["train.epochs=2"], progress=False)
    assert changed.done == 2 and changed.skipped == 0
    assert len(stored_cells(out)) == 2, "a stale cell is replaced, not duplicated"
    fresh = run_suite(suite, out=out, overrides=["train.epochs=2"], fresh=True, progress=False)
    assert fresh.done == 2 and fresh.skipped == 0


@pytest.mark.slow
def test_a_failing_cell_is_recorded_and_the_suite_goes_on(tiny_suite, tmp_path):
    suite = tiny_suite(
        """
        - name: good
        - name: broken
          model: {name: exploding, how: build}
        - name: diverging
          model: {name: exploding, how: nan}
        """,
        extra=f"plugins: [{spy_plugin_path()}]",
    )
    summary = run_suite(suite, out=tmp_path / "out", progress=False, check=False)  # the trial would stop the run
    assert (summary.done, summary.failed, summary.exit_code) == (2, 4, 1)
    conn = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    errors = dict(conn.execute("SELECT variant, error FROM cells WHERE status='failed'").fetchall())
    assert "refuses to be built" in errors["broken"]
    assert "training loss became nan" in errors["diverging"]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "refuses to be built" in html


def test_a_cell_is_reproducible(tiny_suite):
    suite_file = tiny_suite("- {name: a, augmenters: [{name: batch-augment, rotate: 10, noise: 0.05}]}")
    suite, _ = load_suite(suite_file)
    host = PluginHost.load()
    variant = resolve_variants(suite)[0]
    task = CellTask(
        suite, variant, seed=0, fold=1, config_hash=config_hash(suite, variant, 0, 1, "x", False), device="cpu"
    )
    first, second = execute(task, host), execute(task, host)
    assert first.status == second.status == "done"
    assert first.evaluations["heldout"]["scalars"] == second.evaluations["heldout"]["scalars"]
    np.testing.assert_array_equal(first.predictions["test"]["logits"], second.predictions["test"]["logits"])


@pytest.mark.slow
def test_every_result_carries_its_provenance(tiny_suite, tmp_path):
    run_suite(tiny_suite("- name: a"), out=tmp_path / "out", progress=False)
    conn = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    provenance = json.loads(conn.execute("SELECT provenance FROM runs").fetchone()[0])
    for key in ("versions", "device", "suite_hash", "data_md5", "octbench_commit"):
        assert provenance[key], key
    assert provenance["versions"]["torch"] != "not installed"
    assert provenance["device"].startswith("cpu")
    devices = {row[0] for row in conn.execute("SELECT device FROM cells")}
    assert devices and all(d.startswith("cpu") for d in devices)


@pytest.mark.slow
@pytest.mark.parametrize("quick", [False, True])
def test_quick_is_recorded(tiny_suite, tmp_path, quick):
    run_suite(tiny_suite("- name: a"), out=tmp_path / "out", quick=quick, progress=False)
    html = (tmp_path / "out" / "report.html").read_text()
    assert ("Quick run." in html) is quick


@pytest.mark.slow
def test_quick_subsets_the_pool_identically_in_the_check_every_cell_and_the_provenance(write_suite, tmp_path,
                                                                                        monkeypatch):  # fmt: skip
    """--quick is applied once, when the suite is read: the check's sample, each seed's cells and the provenance
    all take the pool rows from ``folds.pool_rows``."""
    monkeypatch.setattr(folds, "QUICK_POOL", 60)  # of the spies' 120 pool images
    log = tmp_path / "spy.jsonl"
    suite = spy_suite(write_suite, log)
    plan = plan_run(suite, quick=True)
    assert plan.suite.quick and plan.suite.epochs == 2
    rows = {seed: plan.pool_rows(seed) for seed in (0, 1)}
    assert all(len(r) == 60 for r in rows.values()) and set(rows[0]) != set(rows[1]), "each seed draws its own"

    assert check_suite(plan) == []
    checked = {i for r in read_log(log) if r["event"] == "fit" for origin, i, _ in r["ids"] if origin == POOL}
    assert checked and checked <= set(rows[0]), "the check tries the variants on the first seed's rows"

    overrides = ["executor.parallel=1"]  # cells in this process, where QUICK_POOL is patched
    run_suite(suite, out=tmp_path / "out", quick=True, progress=False, check=False, overrides=overrides)
    results = load([tmp_path / "out"])
    for variant in results.variants:
        assert len(variant.cells) == 6
        for seed in (0, 1):
            held = [c.predictions["heldout"].indices for c in variant.cells if c.seed == seed]
            assert sorted(np.concatenate(held).tolist()) == sorted(rows[seed].tolist()), (variant.name, seed)
    conn = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    provenance = json.loads(conn.execute("SELECT provenance FROM runs").fetchone()[0])
    conn.close()
    assert provenance["quick"] is True and provenance["pools"] == plan.pools()
    for seed in (0, 1):
        digest = hashlib.sha1(np.sort(rows[seed]).astype(np.int64).tobytes()).hexdigest()
        assert provenance["pools"][str(seed)] == {"rows": 60, "sha1": digest}


@pytest.mark.slow
def test_deterministic_algorithms_leave_cpu_results_unchanged(tiny_suite, tmp_path):
    """CPU kernels repeat exactly already; asking torch for deterministic ones must not change or break a run
    (warnings are errors in this test suite, so an op without a deterministic kernel would fail it)."""
    suite = tiny_suite("- name: a\n- {name: b, augmenters: [{name: batch-augment, rotate: 10}], regularizers: [mixup]}")
    try:
        run_suite(suite, out=tmp_path / "plain", progress=False)
        run_suite(suite, out=tmp_path / "det", overrides=["train.deterministic=true"], progress=False)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    assert stored_metrics(tmp_path / "plain") == stored_metrics(tmp_path / "det")


def test_oversubscribed_parallel_cells_are_warned_about(monkeypatch):
    from octbench_plugins import executors

    monkeypatch.setattr(executors.os, "cpu_count", lambda: 4)
    assert "set train.threads to 2" in executors.oversubscription(2, 4, "cpu")
    assert executors.oversubscription(2, 2, "cpu") is None and executors.oversubscription(4, 1, "cpu") is None
    assert executors.oversubscription(8, 4, "cuda") is None  # GPU cells use the CPU little


@pytest.mark.slow
def test_parallel_cells_give_the_same_results_as_one_at_a_time(tiny_suite, tmp_path):
    suite = tiny_suite("- name: a\n- {name: b, augmenters: [{name: batch-augment, rotate: 10}]}")
    one = run_suite(suite, out=tmp_path / "one", progress=False)
    two = run_suite(suite, out=tmp_path / "two", overrides=["executor.parallel=2"], progress=False)
    assert one.done == two.done == 4

    assert stored_metrics(tmp_path / "one") == stored_metrics(tmp_path / "two")


def test_a_worker_process_runs_stacks_and_hands_each_cell_back_once(tiny_suite):
    """The parallel executor's pool (``octbench.cell.workers``) in the fast tier: three cells in two stacks through one
    spawned worker process, each result back once and as the same cell run here gives."""
    from octbench.cell.execute import execute_stack
    from octbench.cell.workers import WorkerPool

    plan = plan_run(tiny_suite("- name: a\n- name: b"))
    tasks = plan.tasks[:3]
    results = []
    WorkerPool(1, threads=torch.get_num_threads()).run([tasks[:1], tasks[1:]], results.append)
    assert sorted((r.variant, r.seed, r.fold) for r in results) == sorted(t.key for t in tasks)
    assert all(r.status == "done" for r in results), [r.error for r in results]
    there = next(r for r in results if (r.variant, r.seed, r.fold) == tasks[0].key)
    here = execute_stack(tasks[:1])[0]
    assert here.evaluations["heldout"]["scalars"] == there.evaluations["heldout"]["scalars"]
