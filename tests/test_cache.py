"""Cached preprocessing and resampling: identical metrics, reuse across cells and runs, invalidation."""

from __future__ import annotations

import json
import sqlite3

import pytest

from octbench.cell import cache
from octbench.runner import run_suite
from tests.conftest import stored_metrics

VARIANTS = """
- name: clahe-smote
  preprocessors: [{name: clahe, tile_grid: 4}, smote]
- name: clahe
  preprocessors: [{name: clahe, tile_grid: 4}]
"""


def cell_metrics(out):
    conn = sqlite3.connect(out / "results.sqlite")
    timings = {(v, f): json.loads(t) for v, f, t in conn.execute("SELECT variant, fold, timings FROM cells")}
    conn.close()
    return stored_metrics(out), timings


@pytest.mark.slow
def test_cached_and_uncached_runs_give_identical_metrics(tiny_suite, tmp_path, monkeypatch):
    suite = tiny_suite(VARIANTS)
    monkeypatch.setenv("OCTBENCH_NO_CACHE", "1")
    run_suite(suite, out=tmp_path / "uncached", progress=False)
    uncached, timings = cell_metrics(tmp_path / "uncached")
    assert not any(t["preprocess_cached"] or t["resample_cached"] for t in timings.values())

    monkeypatch.delenv("OCTBENCH_NO_CACHE")
    run_suite(suite, out=tmp_path / "first", progress=False)  # fills the cache
    cache.clear_memory()  # a new process would start with an empty memory cache: read from disk
    run_suite(suite, out=tmp_path / "second", progress=False)
    cached, timings = cell_metrics(tmp_path / "second")
    assert cached == uncached
    assert all(t["preprocess_cached"] == 1.0 for t in timings.values())
    assert all(t["resample_cached"] == 1.0 for (variant, _), t in timings.items() if variant == "clahe-smote")


@pytest.mark.slow
def test_within_a_run_variants_share_the_stateless_prefix(tiny_suite, tmp_path):
    run_suite(tiny_suite(VARIANTS), out=tmp_path / "out", progress=False)
    _, timings = cell_metrics(tmp_path / "out")
    # the first cell computes CLAHE over the whole pool; every later cell reuses it
    assert sum(t["preprocess_cached"] == 0.0 for t in timings.values()) == 1


@pytest.mark.slow
def test_changed_parameters_miss_the_cache(tiny_suite, tmp_path):
    run_suite(tiny_suite(VARIANTS), out=tmp_path / "a", progress=False)
    run_suite(tiny_suite(VARIANTS.replace("tile_grid: 4", "tile_grid: 2")), out=tmp_path / "b", progress=False)
    _, timings = cell_metrics(tmp_path / "b")
    assert sum(t["preprocess_cached"] == 0.0 for t in timings.values()) == 1
