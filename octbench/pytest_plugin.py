"""Pytest fixtures for plugin authors, loaded automatically once octbench is installed (entry point ``pytest11``).

- ``octbench_tiny_data``: a small synthetic-oct dataset (``Splits``), deterministic.
- ``octbench_suite``: writes a suite file that trains in seconds; give it YAML variant lines.
- ``octbench_register``: makes a plugin module (a file path or an importable name) visible to every
  ``PluginHost.load()`` in the test, and only in that test.
- ``octbench_run``: runs a suite file to completion in a temporary folder and returns the summary.

It also registers the ``slow`` marker, which the conformance kit puts on checks that train a run, so that
``pytest -m "not slow"`` is a fast tier in a plugin's own tests as in octbench's.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

TINY_SUITE = """\
name: {name}
dataset: {{name: synthetic-oct, n_train: 160, n_val: 40, n_test: 40}}
cv: {{folds: 2, seeds: [0], val_fraction: 0.2, test_split: true}}
train: {{epochs: 1, batch_size: 32, device: cpu}}
defaults: {{model: {{name: cnn, widths: [8, 16], hidden: 16}}}}
{plugins}variants:
{variants}
"""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than about a second; the fast tier is -m 'not slow'")


@pytest.fixture
def octbench_tiny_data():
    from octbench.plugins import PluginHost

    params = {"n_train": 160, "n_val": 40, "n_test": 40}
    return PluginHost.load().create("dataset", "synthetic-oct", params).load(None)


@pytest.fixture
def octbench_suite(tmp_path):
    def write(variants: str = "- name: baseline", *, plugins: list[str] = (), name: str = "tiny") -> Path:
        listed = f"plugins: [{', '.join(os.fspath(p) for p in plugins)}]\n" if plugins else ""
        body = textwrap.indent(textwrap.dedent(variants).strip(), "  ")
        path = tmp_path / f"{name}.yaml"
        path.write_text(TINY_SUITE.format(name=name, plugins=listed, variants=body))
        return path

    return write


@pytest.fixture
def octbench_register(monkeypatch):
    def register(target: str | os.PathLike) -> None:
        current = os.environ.get("OCTBENCH_PLUGINS", "")
        monkeypatch.setenv("OCTBENCH_PLUGINS", ",".join(p for p in (current, os.fspath(target)) if p))

    return register


@pytest.fixture
def octbench_run(tmp_path, monkeypatch):
    """Runs a suite to completion in a temporary folder, with octbench's caches in temporary folders too."""
    from octbench.runner import run_suite

    monkeypatch.setenv("OCTBENCH_CACHE_DIR", os.fspath(tmp_path / "octbench-cache"))
    monkeypatch.setenv("OCTBENCH_TUNING_FILE", os.fspath(tmp_path / "octbench-cache" / "tuning.json"))

    def run(suite: str | os.PathLike, **options):
        return run_suite(suite, out=options.pop("out", tmp_path / "run"), progress=False, **options)

    return run
