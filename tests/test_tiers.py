"""The test suite's own machinery: with test workers, a test marked ``serial`` runs alone (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

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


def test_beside():
    started = time.monotonic()
    deadline = started + 3  # long enough for the other worker to start the serial test, were it allowed to
    while not (FOLDER / "alone-started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    record("beside", started)
"""


@pytest.mark.slow
def test_a_serial_test_runs_while_no_other_test_does(tmp_path):
    """Two workers, two tests: the plain one waits up to 3 s for the serial one to start. Were the serial test let
    in beside it, their times would overlap; with the lock, one runs after the other whichever comes first."""
    (tmp_path / "test_probe.py").write_text(textwrap.dedent(PROBE))
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    serial: runs alone\n")
    env = {**os.environ, "PROBE_FOLDER": str(tmp_path), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest", "-n", "2",
         "--basetemp", str(tmp_path / "base"), "test_probe.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    (alone_start, alone_end, _), (beside_start, beside_end, _) = (
        (tmp_path / name).read_text().split() for name in ("alone", "beside")
    )
    assert float(alone_end) <= float(beside_start) or float(beside_end) <= float(alone_start)
