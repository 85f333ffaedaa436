"""ruff's checks and its formatter (configured in pyproject.toml) over the whole repository, the code blocks of the
Markdown guides included."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ruff(*args: str) -> None:
    """``ruff *args`` over the repository (no cache): it must exit 0."""
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (dev extra)")
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--no-cache", str(REPO)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_finds_nothing():
    _ruff("check")


def test_ruff_format_changes_nothing():
    _ruff("format", "--check")
