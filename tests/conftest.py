from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist"
SPY_PLUGINS = Path(__file__).resolve().parent / "plugins" / "spies.py"


def pytest_configure(config):
    """With test workers side by side (pytest-xdist), torch's CPU threads wait passively, as octbench itself decides
    on a machine already busy: two workers' spinning threads on two cores starve each other (octbench.cpu_wait).
    Set here, in the process that starts the workers, before any of them loads torch."""
    if getattr(config.option, "numprocesses", None):
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_collection_modifyitems(config, items):
    """Every test that starts Ray runs in one test worker, one after another: tests/test_ray.py (one cluster for
    the module) and the conformance kit's check of the ray executor. With test workers, the order is what keeps
    two workers busy to the end: serial tests first (each waits for the test in flight on the other worker, which
    is then short), the Ray group next (the longest unit, its serial test first), then the other slow tests, the
    fast ones last to fill in."""
    for item in items:
        if item.nodeid.startswith("tests/test_ray.py") or "[ray-" in item.nodeid:
            item.add_marker(pytest.mark.xdist_group("ray"))
    if hasattr(config, "workerinput"):
        items.sort(key=_turn)  # stable, and the same in every worker


def _turn(item) -> int:
    serial = item.get_closest_marker("serial") is not None
    if item.get_closest_marker("xdist_group") is not None:
        return 1 if serial else 2
    if serial:
        return 0
    return 3 if item.get_closest_marker("slow") is not None else 4


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With test workers (``-n 2``), a test marked ``serial`` runs while no other test does: it holds the run's
    lock exclusively from its set-up to its tear-down, where every other test holds it shared. Those tests assert
    on wall-clock limits (a cell stopped at ``train.timeout`` beside one that must finish within it), which a
    second worker's training on the other core could push past the limit. A turnstile keeps a serial test that
    waits from being passed by the other worker's next tests."""
    locks = _worker_locks(item.config)
    if locks is None:  # one process (or a pytest a test started): nothing runs beside this test
        return (yield)
    turnstile, lock = locks
    fcntl.flock(turnstile, fcntl.LOCK_EX)
    if item.get_closest_marker("serial"):
        fcntl.flock(lock, fcntl.LOCK_EX)
        fcntl.flock(turnstile, fcntl.LOCK_UN)
    else:
        fcntl.flock(turnstile, fcntl.LOCK_UN)
        fcntl.flock(lock, fcntl.LOCK_SH)
    try:
        return (yield)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)


def _worker_locks(config):
    """This test worker's handles on the two lock files all workers of the run share (in the run's temporary
    folder, which xdist gives each worker a subfolder of); None outside a worker."""
    folder = _workers_folder(config)
    if folder is None:
        return None
    if not hasattr(config, "_octbench_locks"):
        # held for the worker's life, closed with its process
        config._octbench_locks = tuple(open(folder / name, "a") for name in ("turnstile.lock", "serial.lock"))  # noqa: SIM115
    return config._octbench_locks


def _workers_folder(config) -> Path | None:
    """The temporary folder the test workers of one run share: xdist hands each worker a subfolder of it as its
    ``--basetemp``. None outside a worker."""
    if not hasattr(config, "workerinput") or not config.option.basetemp:
        return None
    return Path(config.option.basetemp).resolve().parent


def run_folder(pytestconfig, tmp_path_factory) -> Path:
    """The temporary folder of the whole test run: the workers' shared one, or pytest's own in one process."""
    return _workers_folder(pytestconfig) or tmp_path_factory.getbasetemp()


def made_once(pytestconfig, tmp_path_factory, name: str, make) -> Path:
    """A folder for a session fixture that every test only reads: ``make(folder)`` runs in the first test worker
    that needs it, and the other waits for it and reuses it (one trained run per test run, not one per worker)."""
    root = run_folder(pytestconfig, tmp_path_factory)
    folder, made = root / name, root / f"{name}.made"
    with open(root / f"{name}.lock", "a") as lock:
        # released when the file is closed. No deadlock with the serial lock: a worker takes this lock only inside a
        # test, so it already holds the serial lock (shared, or exclusive in a serial test, when the other worker
        # holds nothing), and the worker that makes the folder never waits on the serial lock while it holds this one
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not made.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a worker that failed half-way left
            folder.mkdir()
            make(folder)
            made.touch()
    return folder


@pytest.fixture(scope="session")
def tuning_file(pytestconfig, tmp_path_factory) -> Path:
    """One record of measured choices (bf16 or float32) for the whole test run, as one machine keeps: a timed
    trial repeated in every test's fresh cache could choose differently between two runs a test compares (and
    test workers share the runs of ``made_once``)."""
    return run_folder(pytestconfig, tmp_path_factory) / "tuning.json"


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch, tuning_file):
    """No test reads or writes the user's caches, data folder or plugin settings."""
    from octbench.cell import cache

    monkeypatch.setenv("OCTBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("OCTBENCH_TUNING_FILE", str(tuning_file))
    cache.clear_memory()
    for variable in ("OCTBENCH_DATA_DIR", "OCTBENCH_PLUGINS", "OCTBENCH_DISABLE_PLUGINS"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "breastmnist.npz").exists():
        pytest.skip(f"real MedMNIST files not found at {SHARED_DATA} (the ../shared folder is absent)")
    return SHARED_DATA


@pytest.fixture
def write_suite(tmp_path):
    """Write a suite file from YAML text; returns its path."""

    def write(text: str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


TINY_DATASET = "{name: synthetic-oct, n_train: 160, n_val: 40, n_test: 40}"


@pytest.fixture
def tiny_suite(tmp_path):
    """A suite that trains in about a second per cell on tiny synthetic data; ``variants`` is a YAML list."""

    def make(variants: str, *, folds: int = 2, seeds: str = "[0]", extra: str = "", epochs: int = 1) -> Path:
        text = "\n".join(
            [
                "name: tiny",
                f"dataset: {TINY_DATASET}",
                f"cv: {{folds: {folds}, seeds: {seeds}, val_fraction: 0.2, test_split: true}}",
                f"train: {{epochs: {epochs}, batch_size: 32, optimizer: {{name: adam, lr: 0.003}}, device: cpu}}",
                "defaults: {model: {name: cnn, widths: [8, 16], hidden: 16}}",
                extra,
                "variants:",
                textwrap.indent(textwrap.dedent(variants).strip(), "  "),
            ]
        )
        path = tmp_path / "tiny.yaml"
        path.write_text(text + "\n")
        return path

    return make


def spy_plugin_path() -> str:
    return os.fspath(SPY_PLUGINS)


FOUR_VARIANTS = """
name: report-check
dataset: {name: synthetic-oct, n_train: 240, n_val: 40, n_test: 60}
cv: {folds: 3, seeds: [0], val_fraction: 0.2, test_split: true}
train: {epochs: 2, batch_size: 32, optimizer: {name: adam, lr: 0.003}, device: cpu}
defaults: {model: {name: cnn, widths: [8, 16], hidden: 16}}
variants:
  - name: baseline
  - name: flip
    augmenters: [{name: batch-augment, hflip: 0.5}]
  - name: smote
    preprocessors: [smote]
  - name: class-weights
    regularizers: [class-weights]
"""


@pytest.fixture(scope="session")
def run_dir(pytestconfig, tmp_path_factory, tuning_file):
    """A finished run of a four-variant suite (shared by the report and browser tests). A session fixture is set up
    before the per-test environment, so it isolates itself the same way."""
    from octbench.runner import run_suite

    def make(folder: Path) -> None:
        (folder / "suite.yaml").write_text(FOUR_VARIANTS)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("OCTBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
            patch.setenv("OCTBENCH_TUNING_FILE", str(tuning_file))
            summary = run_suite(folder / "suite.yaml", out=folder / "out", progress=False)
        assert summary.failed == 0

    return made_once(pytestconfig, tmp_path_factory, "report", make) / "out"


@pytest.fixture(scope="session")
def numbers_dir(pytestconfig, tmp_path_factory, tuning_file):
    """``FOUR_VARIANTS``' every cell written from made-up predictions (``tests.numbers``), with its report: for the
    report, export and image tests that need a store, not a trained model (made in about a second, where
    ``run_dir`` trains twelve cells)."""
    from tests.numbers import write_results

    def make(folder: Path) -> None:
        (folder / "suite.yaml").write_text(FOUR_VARIANTS)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("OCTBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
            patch.setenv("OCTBENCH_TUNING_FILE", str(tuning_file))
            write_results(folder / "suite.yaml", folder / "out", {"baseline": 1.5, "flip": 1.6, "smote": 0.6,
                                                                  "class-weights": 1.4})  # fmt: skip

    return made_once(pytestconfig, tmp_path_factory, "numbers", make) / "out"


SMOKE_SETTINGS = ["--set", "train.threads=1"]  # one thread per cell, as tests/test_ray.py's cluster runs it


@pytest.fixture(scope="session")
def smoke_dir(pytestconfig, tmp_path_factory, tuning_file):
    """``suites/smoke.yaml`` run once through the CLI with ``SMOKE_SETTINGS``: (results folder, the command's
    output). Tests read it; one that writes into it works on a copy."""
    from click.testing import CliRunner

    from octbench.cli import cli

    def make(folder: Path) -> None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("OCTBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
            patch.setenv("OCTBENCH_TUNING_FILE", str(tuning_file))
            result = CliRunner().invoke(
                cli, ["run", str(REPO / "suites" / "smoke.yaml"), "--out", str(folder / "smoke"), "--no-progress",
                      *SMOKE_SETTINGS],
            )  # fmt: skip
        assert result.exit_code == 0, result.output
        (folder / "output.txt").write_text(result.output)

    folder = made_once(pytestconfig, tmp_path_factory, "smoke", make)
    return folder / "smoke", (folder / "output.txt").read_text()


def stored_metrics(out: Path) -> dict[tuple, float]:
    """{(variant, fold, split, metric): value} of every stored cell under ``out``."""
    conn = sqlite3.connect(out / "results.sqlite")
    rows = conn.execute(
        "SELECT c.variant, c.fold, m.split, m.name, m.value FROM cells c JOIN metrics m ON m.cell_id = c.id"
    ).fetchall()
    conn.close()
    return {r[:4]: r[4] for r in rows}


def cells(out: Path) -> list[tuple]:
    """(variant, seed, fold, status, error) of every cell stored under ``out``, read while a run may be writing."""
    if not (out / "results.sqlite").exists():
        return []
    conn = sqlite3.connect(out / "results.sqlite")
    try:
        return conn.execute("SELECT variant, seed, fold, status, error FROM cells").fetchall()
    except sqlite3.OperationalError:  # the schema is not there yet: the run is starting
        return []
    finally:
        conn.close()


def wait_for(condition, process: subprocess.Popen | None = None, timeout: float = 240) -> None:
    """Poll ``condition``; if ``process`` ends first, or time runs out, fail (and never leave the process behind)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended first: {process.communicate()}")
        if time.monotonic() > deadline:
            if process is not None:
                process.kill()
                process.communicate()
            raise AssertionError("timed out waiting")
        time.sleep(0.05)
