"""octbench-extra's own tests: the conformance kit over every plugin, and a short run that uses them all."""

from __future__ import annotations

import sqlite3

import pytest

extra = pytest.importorskip(
    "octbench_extra.plugins", reason="install the package: pip install -e examples/octbench-extra"
)

from octbench.testing import parametrize_with_checks  # noqa: E402

PLUGINS = [extra.Gamma, extra.RandomErasing, extra.ClipGradients, extra.RMSprop, extra.LogLoss, extra.ClassBalance]


@parametrize_with_checks(PLUGINS)
def test_conformance(technique, check):
    check(technique)


@pytest.mark.slow
def test_every_plugin_in_a_run(octbench_suite, octbench_run):
    suite = octbench_suite(
        """
        - name: baseline
        - name: everything
          preprocessors: [{name: gamma, gamma: 0.7}]
          augmenters: [random-erasing]
          regularizers: [{name: clip-gradients, max_norm: 0.5}, {name: optimizer, algorithm: rmsprop}]
        """
    )
    summary = octbench_run(suite)
    assert summary.failed == 0 and summary.done > 0
    conn = sqlite3.connect(summary.out / "results.sqlite")
    losses = conn.execute("SELECT value FROM metrics WHERE name = 'log-loss'").fetchall()
    conn.close()
    assert losses and all(v[0] > 0 for v in losses)
    page = (summary.out / "report.html").read_text()
    assert '<a href="#class-balance">Class balance</a>' in page and '<h2 id="class-balance">' in page
    assert 'alt="class shares per split"' in page
