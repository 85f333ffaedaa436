"""The Ray executor on a real multi-node Ray cluster started on 127.0.0.1 (three raylets, one CPU each).

Ray is an optional extra (`octbench[ray]`, installed with the dev tools); without it these tests skip.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from octbench.cli import cli
from octbench.runner import run_suite
from tests.conftest import cells, stored_metrics, wait_for

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'octbench[ray]'")

REPO = Path(__file__).resolve().parents[1]
NODE_SPY = Path(__file__).resolve().parent / "plugins" / "node_spy.py"


@pytest.fixture(scope="module")
def cluster():
    """A head and two worker nodes on this machine; the driver (this process or a child) connects by address."""
    from ray.cluster_utils import Cluster

    started = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(2):
        started.add_node(num_cpus=1)
    started.wait_for_nodes()
    yield started
    if ray.is_initialized():
        ray.shutdown()
    started.shutdown()


def spy_suite(tmp_path: Path, log: Path, seconds: float, variants: int = 2, folds: int = 2) -> Path:
    path = tmp_path / "spied.yaml"
    names = "\n".join(
        f"  - {{name: v{i}, regularizers: [{{name: node-spy, log: {log}, seconds: {seconds}}}]}}"
        for i in range(variants)
    )
    path.write_text(
        f"name: spied\nplugins: [{NODE_SPY}]\n"
        "dataset: {name: synthetic-oct, n_train: 160, n_val: 40, n_test: 40}\n"
        f"cv: {{folds: {folds}}}\ntrain: {{epochs: 1, batch_size: 32, device: cpu, threads: 1}}\n"
        "defaults: {model: {name: cnn, widths: [8], hidden: 8}}\n"
        f"variants:\n{names}\n"
    )
    return path


def entries(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def driver(suite: Path, out: Path, address: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "octbench", "run", str(suite), "--out", str(out), "--no-progress",
               "--executor", "ray", "--address", address, "--no-check"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_the_smoke_suite_on_a_cluster_gives_the_local_metrics(cluster, smoke_dir, tmp_path):
    local, _ = smoke_dir  # suites/smoke.yaml run here, one thread per cell, through the CLI (tests/conftest.py)
    remote = run_suite(
        REPO / "suites" / "smoke.yaml",
        out=tmp_path / "ray",
        progress=False,
        overrides=["train.threads=1", "executor.name=ray", f"executor.address={cluster.address}"],
    )
    assert [c[3] for c in cells(local)] == ["done"] * 12 and remote.done == 12 and remote.failed == 0
    assert stored_metrics(tmp_path / "ray") == stored_metrics(local), "not identical to a local run"
    conn = sqlite3.connect(tmp_path / "ray" / "results.sqlite")
    executor = json.loads(conn.execute("SELECT provenance FROM runs").fetchone()[0])["executor"]
    conn.close()
    assert executor["name"] == "ray"


@pytest.mark.slow
def test_a_variant_at_another_size_runs_on_a_cluster_as_it_runs_locally(cluster, tmp_path):
    suite = tmp_path / "sizes.yaml"
    suite.write_text(
        "name: sizes\ndataset: {name: synthetic-oct, n_train: 160, n_val: 40, n_test: 40}\n"
        "cv: {folds: 2}\ntrain: {epochs: 1, batch_size: 32, device: cpu, threads: 1}\n"
        "defaults: {model: {name: cnn, widths: [8], hidden: 8}}\n"
        "variants:\n  - name: baseline\n  - name: px40\n    dataset: {size: 40}\n"
    )
    local = run_suite(suite, out=tmp_path / "local", progress=False)
    remote = run_suite(
        suite,
        out=tmp_path / "ray",
        progress=False,
        overrides=["executor.name=ray", f"executor.address={cluster.address}"],
    )
    assert local.done == remote.done == 4 and remote.failed == 0
    assert stored_metrics(tmp_path / "ray") == stored_metrics(tmp_path / "local"), "the 40 px data reached the nodes"


@pytest.mark.slow
def test_the_suites_plugin_file_reaches_the_workers_and_a_lost_node_loses_no_cell(cluster, tmp_path):
    log = tmp_path / "nodes.jsonl"
    suite, out = spy_suite(tmp_path, log, seconds=4.0, variants=3), tmp_path / "out"
    head = cluster.head_node.node_id
    process = driver(suite, out, cluster.address)
    try:
        wait_for(lambda: any(e["node"] != head for e in entries(log)), process)
        victim = next(e["node"] for e in entries(log) if e["node"] != head)
        node = next(n for n in cluster.worker_nodes if n.node_id == victim)
        cluster.remove_node(node)  # the node and the cell it is training are gone
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    assert process.returncode == 0, stderr
    stored = cells(out)
    assert len(stored) == 6 and len({c[:3] for c in stored}) == 6 and all(c[3] == "done" for c in stored)
    nodes = {e["node"] for e in entries(log)}
    assert "not on ray" not in nodes and len(nodes) >= 2, "the workers loaded the suite's plugin file"
    assert len(entries(log)) > 6, "the lost node's cell ran again elsewhere"


@pytest.mark.slow
def test_a_driver_killed_mid_run_resumes_without_retraining(cluster, tmp_path):
    log = tmp_path / "nodes.jsonl"
    suite, out = spy_suite(tmp_path, log, seconds=2.0, variants=3, folds=3), tmp_path / "out"
    process = driver(suite, out, cluster.address)
    try:
        wait_for(lambda: len(cells(out)) >= 2, process)
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    before = {c[:3] for c in cells(out)}
    assert 2 <= len(before) < 9
    summary = run_suite(
        suite,
        out=out,
        progress=False,
        overrides=["executor.name=ray", f"executor.address={cluster.address}"],
        check=False,
    )
    assert summary.skipped == len(before) and summary.done == 9 - len(before)
    assert len(cells(out)) == 9


@pytest.mark.serial
@pytest.mark.slow
def test_a_plugin_that_never_returns_fails_only_its_cells_on_ray(cluster, tmp_path):
    """The hang of tests/test_faults.py (configure_model never returns) in Ray tasks: each is stopped at the limit
    where it hangs, in the task's own process, and the suite goes on."""
    hostile = Path(__file__).resolve().parent / "plugins" / "hostile.py"
    suite = tmp_path / "hangs.yaml"
    suite.write_text(
        f"name: hangs\nplugins: [{hostile}]\n"
        "dataset: {name: synthetic-oct, n_train: 160, n_val: 40, n_test: 40}\n"
        "cv: {folds: 2}\ntrain: {epochs: 1, batch_size: 32, device: cpu, threads: 1, timeout: 8}\n"
        "defaults: {model: {name: cnn, widths: [8], hidden: 8}}\nexecutor: {stack: 1}\n"
        "variants:\n  - {name: baseline}\n  - {name: hangs, regularizers: [hangs]}\n"
    )
    overrides = ["executor.name=ray", f"executor.address={cluster.address}"]
    summary = run_suite(suite, out=tmp_path / "out", progress=False, overrides=overrides, check=False)
    assert (summary.done, summary.failed) == (2, 2)
    failed = [c[4] for c in cells(tmp_path / "out") if c[3] == "failed"]
    assert all("ran past train.timeout (8 s) and was stopped in configure_model (hostile.py:" in e for e in failed)


def test_asking_for_ray_without_ray_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    suite = spy_suite(tmp_path, tmp_path / "log", seconds=0)
    result = CliRunner().invoke(cli, ["run", str(suite), "--out", str(tmp_path / "out"), "--executor", "ray"])
    assert result.exit_code == 2 and "pip install 'octbench[ray]'" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_without_an_address_it_starts_its_own_instance_whatever_the_environment_names(monkeypatch):
    """CI once joined a dead cluster that RAY_ADDRESS / a stale /tmp/ray/ray_current_cluster named, and hung."""
    from octbench.testing import check_executor_runs_every_cell_once
    from plugins.ray_executor import RayExecutor

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")  # the discard port: nothing answers there
    check_executor_runs_every_cell_once(RayExecutor)
    assert not ray.is_initialized(), "the executor shut down the instance it started"
