"""Checks that need a CUDA GPU; they skip elsewhere. `benchmarks/gpu_run.sh extra` runs them on a lent GPU.

On CUDA, bit-for-bit repeatability needs `train.deterministic: true` (cuDNN and atomic-add kernels otherwise
vary between runs), so these runs ask for it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from octbench.plugins import PluginHost
from octbench.runner import run_suite
from tests.conftest import stored_metrics

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ON_CUDA = ["train.device=cuda", "train.deterministic=true"]
VARIANTS = """
- name: a
- name: b
  augmenters: [{name: batch-augment, hflip: 0.5, rotate: 10}]
  preprocessors: [{name: device-smote, k_neighbors: 3}]
"""


def test_deterministic_cuda_runs_repeat_exactly(tiny_suite, tmp_path):
    suite = tiny_suite(VARIANTS)
    run_suite(suite, out=tmp_path / "one", overrides=ON_CUDA, progress=False)
    run_suite(suite, out=tmp_path / "two", overrides=ON_CUDA, progress=False)
    assert stored_metrics(tmp_path / "one") == stored_metrics(tmp_path / "two")


def test_parallel_cuda_cells_match_one_at_a_time(tiny_suite, tmp_path):
    suite = tiny_suite(VARIANTS)
    run_suite(suite, out=tmp_path / "one", overrides=ON_CUDA, progress=False)
    run_suite(suite, out=tmp_path / "two", overrides=[*ON_CUDA, "executor.parallel=2"], progress=False)
    assert stored_metrics(tmp_path / "one") == stored_metrics(tmp_path / "two")


def test_device_smote_on_cuda_equals_smote():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (90, 28, 28, 1), dtype=np.uint8)  # random pixels: no tied distances
    labels = np.repeat([0, 1, 2], [60, 15, 15])
    host = PluginHost.load()
    reference = host.create("preprocessor", "smote").fit_resample(images, labels, random_state=9)
    on_cuda = host.create("preprocessor", "device-smote", {"device": "cuda"}).fit_resample(
        images, labels, random_state=9
    )
    np.testing.assert_array_equal(on_cuda[0], reference[0])
    np.testing.assert_array_equal(on_cuda[1], reference[1])


def test_stacked_cuda_cells_match_cells_trained_alone(tiny_suite, tmp_path):
    """As tests/test_stack.py checks on a CPU: every epoch's losses within 0.2%, accuracy and AUC within 0.05."""
    suite = tiny_suite(VARIANTS, epochs=3)
    alone = [*ON_CUDA, "train.precision=fp32", "executor.stack=1"]
    stacked = [*ON_CUDA, "train.precision=fp32", "executor.stack=8"]
    run_suite(suite, out=tmp_path / "alone", overrides=alone, progress=False)
    run_suite(suite, out=tmp_path / "stacked", overrides=stacked, progress=False)
    one, many = stored_metrics(tmp_path / "alone"), stored_metrics(tmp_path / "stacked")
    assert one.keys() == many.keys()
    for key, value in one.items():
        if key[3] in ("accuracy", "auc_macro"):
            assert many[key] == pytest.approx(value, abs=0.05), key
