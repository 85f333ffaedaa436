"""Throughput of the hot pieces: preprocessing, both SMOTEs, both augmenters, a training step, an evaluation pass.

Run: `pytest benchmarks/ --benchmark-only` (add `--benchmark-json out.json` to keep the figures).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.conftest import scaled
from octbench.cell.device import as_float, autocast
from octbench.cell.inference import eval_batch_size, predict_logits
from octbench.cell.train import fast_path, make_optimizer, to_device
from octbench.suite import Train


def test_clahe_10k_images(benchmark, host, octmnist_like):
    images = octmnist_like[0][: scaled(10_000)]
    clahe = host.create("preprocessor", "clahe", {"clip_limit": 2.0, "tile_grid": 8})
    benchmark.extra_info["images"] = len(images)
    out = benchmark(clahe.transform, images)
    assert out.shape == images.shape


@pytest.mark.parametrize("name", ["smote", "device-smote"])
def test_smote(benchmark, host, octmnist_like, name):
    images, labels = octmnist_like
    smote = host.create("preprocessor", name, {"k_neighbors": 5})
    benchmark.extra_info["images"] = len(images)
    _out, out_labels = benchmark.pedantic(
        smote.fit_resample, args=(images, labels), kwargs={"random_state": 0}, rounds=2, iterations=1, warmup_rounds=0
    )
    assert len(set(np.bincount(out_labels))) == 1


AUGMENT_POLICY = {"hflip": 0.5, "rotate": 15, "brightness": 0.2}


def test_batch_augment_batch_512(benchmark, host):
    augment = host.create("augmenter", "batch-augment", AUGMENT_POLICY)
    batch, generator = torch.rand(512, 1, 28, 28), torch.Generator().manual_seed(0)
    benchmark.extra_info["images"] = 512
    benchmark(augment, batch, generator)


def test_albumentations_batch_512(benchmark, host):
    augment = host.create(
        "augmenter",
        "albumentations",
        {
            "transforms": [
                {"name": "HorizontalFlip", "p": 0.5},
                {"name": "Rotate", "limit": 15, "p": 1.0},
                {"name": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.0, "p": 1.0},
            ]
        },
    )
    batch, generator = torch.rand(512, 1, 28, 28), torch.Generator().manual_seed(0)
    benchmark.extra_info["images"] = 512
    benchmark(augment, batch, generator)


@pytest.mark.parametrize("batch_size", [64, 512])
def test_training_step_seed_cnn(benchmark, host, octmnist_like, batch_size):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x, y = to_device(octmnist_like[0][:batch_size], octmnist_like[1][:batch_size], device)
    use_amp, channels_last = fast_path(Train(), device)
    model = host.create("model", "seed-cnn").build(1, 4, 28).to(device)
    model = model.to(memory_format=torch.channels_last) if channels_last else model
    optimizer = make_optimizer(model, Train().optimizer.options(), device)

    def step():  # as octbench.cell.train.train does it
        with autocast(device, use_amp):
            logits = model(as_float(x, channels_last))
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    benchmark.extra_info["images"] = batch_size
    benchmark(step)


def test_evaluation_pass_seed_cnn(benchmark, host, octmnist_like):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x, _ = to_device(octmnist_like[0][: scaled(10_000)], octmnist_like[1][: scaled(10_000)], device)
    use_amp, channels_last = fast_path(Train(), device)
    model = host.create("model", "seed-cnn").build(1, 4, 28).to(device)
    model = model.to(memory_format=torch.channels_last) if channels_last else model
    benchmark.extra_info["images"] = len(x)
    batch = eval_batch_size(Train(), device)
    probs = benchmark(lambda: predict_logits(model, x, batch, use_amp, channels_last).cpu())
    assert probs.shape == (len(x), 4)


def _auc_per_resample(y_true, probs, weights):
    """The baseline: materialise each resample of images and rank it (what the report did before weights)."""
    from scipy.stats import rankdata

    values = []
    for row in weights.astype(int):
        index = np.repeat(np.arange(len(y_true)), row)
        t, p = y_true[index], probs[index]
        aucs = []
        for c in range(p.shape[1]):
            positive = t == c
            n_pos, n_neg = positive.sum(), len(t) - positive.sum()
            ranks = rankdata(p[:, c])
            aucs.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
        values.append(np.mean(aucs))
    return np.array(values)


@pytest.mark.parametrize("way", ["per-resample", "weighted"])
def test_bootstrap_macro_auc_1000_test_images(benchmark, way):
    """The report's test-split interval: 1,000 resamples of OCTMNIST's 1,000 test images, 4 classes."""
    from octbench import stats

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 1000)
    probs = rng.dirichlet(np.ones(4), 1000)
    metric = _auc_per_resample if way == "per-resample" else stats.weighted_macro_auc
    low, high = benchmark(stats.bootstrap_ci, metric, y, probs)
    assert low < stats.macro_auc(y, probs) < high
