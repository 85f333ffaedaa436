"""Benchmarks (pytest-benchmark): `pytest benchmarks/ --benchmark-only`. Sizes scale with OCTBENCH_BENCH_SCALE."""

from __future__ import annotations

import os

import numpy as np
import pytest

from octbench.plugins import PluginHost

SCALE = float(os.environ.get("OCTBENCH_BENCH_SCALE", "1"))


def scaled(n: int) -> int:
    return max(16, int(n * SCALE))


@pytest.fixture(scope="session")
def host():
    return PluginHost.load()


@pytest.fixture(scope="session")
def octmnist_like(host):
    """Synthetic OCT images with OCTMNIST's class imbalance (20,000 by default; 97,477 is full size)."""
    data = host.create("dataset", "synthetic-oct", {"n_train": scaled(20_000), "n_val": 16, "n_test": 16}).load(None)
    return data.train_images, data.train_labels


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(0)
