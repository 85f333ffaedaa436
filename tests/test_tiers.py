"""The test suite's own machinery (tests/conftest.py, pyproject.toml): with test workers, a test marked ``serial``
runs alone, and the tests of one xdist_group run in one worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ADDOPTS = re.search(r'^addopts = "(.*)"$', (REPO / "pyproject.toml").read_text(), re.M)[1].split()

PROBE = """
import os, time
from pathlib import Path

import pytest

FOLDER = Path(os.environ["PROBE_FOLDER"])


def record(name, started):
    (FOLDER / name).write_text(f"{started} {time.monotonic()} {os.environ['PYTEST_XDIST_WORKER']}")


@pytest.mark.serial
def test_alone():
    started = time.monotonic()
    (FOLDER / "alone-started").touch()
    time.sleep(0.5)
    record("alone", started)


@pytest.mark.xdist_group("together")
@pytest.mark.parametrize("i", range(3))
def test_grouped(i):
    record(f"grouped-{i}", time.monotonic())


def test_beside():
    started = time.monotonic()
    deadline = started + 3  # long enough for the other worker to start the serial test, were it allowed to
    while not (FOLDER / "alone-started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    record("beside", started)
"""


@pytest.mark.slow
def test_a_serial_test_runs_while_no_other_test_does_and_a_group_runs_in_one_worker(tmp_path):
    """Two workers, with this suite's options: a plain test waits up to 3 s for the serial one to start. Were the
    serial test let in beside it, their times would overlap; with the lock, one runs after the other whichever
    comes first. The three tests of one group report one worker."""
    (tmp_path / "test_probe.py").write_text(textwrap.dedent(PROBE))
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    serial: runs alone\n")  # and addopts below
    env = {**os.environ, "PROBE_FOLDER": str(tmp_path), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest", "-n", "2", *ADDOPTS,
         "--basetemp", str(tmp_path / "base"), "test_probe.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    (alone_start, alone_end, _), (beside_start, beside_end, _) = (
        (tmp_path / name).read_text().split() for name in ("alone", "beside")
    )
    assert float(alone_end) <= float(beside_start) or float(beside_end) <= float(alone_start)
    workers = {(tmp_path / f"grouped-{i}").read_text().split()[2] for i in range(3)}
    assert len(workers) == 1, f"one xdist_group ran on {sorted(workers)} (pytest 9.2 drops groups: xdist#1386)"
