"""Built-in techniques and the training loop on tiny data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from octbench.cell.inference import evaluate_loss
from octbench.cell.metrics import evaluate
from octbench.cell.train import fast_path, to_device, train
from octbench.plugins import PluginHost
from octbench.suite import Train


@pytest.fixture(scope="module")
def host():
    return PluginHost.load()


def test_seed_cnn_is_the_seed_projects_network(host):
    model = host.create("model", "seed-cnn").build(1, 4, 28)
    assert sum(p.numel() for p in model.parameters()) == 167_172
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 4)
    assert host.create("model", "seed-cnn").build(3, 5, 64)(torch.zeros(2, 3, 64, 64)).shape == (2, 5)


def test_cnn_is_configurable(host):
    plain = host.create("model", "cnn", {"batchnorm": False, "dropout": 0}).build(1, 4, 28)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert all(m.p == 0 for m in plain.modules() if isinstance(m, torch.nn.Dropout))
    with pytest.raises(ValueError, match="shrink"):
        host.create("model", "cnn", {"widths": [8] * 6}).build(1, 4, 28)


def test_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    probs = rng.dirichlet(np.ones(4), 200)
    probs[np.arange(200), y] += 0.3
    probs /= probs.sum(1, keepdims=True)
    result = evaluate(y, np.log(probs), 4)  # logits whose softmax is probs
    assert result["scalars"]["auc_macro"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))
    assert result["scalars"]["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == y))
    assert np.sum(result["confusion"]) == 200
    binary = evaluate(y % 2, np.log(np.stack([1 - probs[:, 0], probs[:, 0]], 1)), 2)
    assert binary["scalars"]["auc_macro"] == pytest.approx(roc_auc_score(y % 2, probs[:, 0]))
    both = [c["auc"] for c in binary["roc"]]
    assert both[0] == pytest.approx(both[1]), "one binary AUC, whichever class is called positive"


def test_batch_augment_is_deterministic_and_preserves_shape(host):
    augment = host.create(
        "augmenter",
        "batch-augment",
        {"rotate": 15, "translate": 0.1, "scale": 0.1, "brightness": 0.2, "contrast": 0.2, "noise": 0.05},
    )
    batch = torch.rand(16, 3, 28, 28)
    first = augment(batch, torch.Generator().manual_seed(1))
    again = augment(batch, torch.Generator().manual_seed(1))
    other = augment(batch, torch.Generator().manual_seed(2))
    assert first.shape == batch.shape and torch.equal(first, again) and not torch.equal(first, other)
    assert first.min() >= 0 and first.max() <= 1
    flip = host.create("augmenter", "batch-augment", {"hflip": 1.0})
    assert torch.equal(flip(batch, torch.Generator()), batch.flip(-1))


def test_smote_on_uint8_interpolates_without_wrapping_around(host):
    rng = np.random.default_rng(0)
    minority = rng.choice([3, 250], size=(5, 6, 6, 1)).astype(np.uint8)  # extremes: wraparound would show
    majority = rng.integers(0, 255, (20, 6, 6, 1), dtype=np.uint8)
    images = np.concatenate([majority, minority])
    labels = np.array([0] * 20 + [1] * 5)
    smote = host.create("preprocessor", "smote", {"k_neighbors": 4})
    out, out_labels = smote.fit_resample(images, labels, random_state=0)
    assert out.dtype == np.uint8 and out.shape[1:] == images.shape[1:]
    assert np.bincount(out_labels).tolist() == [20, 20]
    synthetic = out[len(images) :].reshape(15, -1).astype(float)
    flat = minority.reshape(5, -1).astype(float)
    for sample in synthetic:  # each lies on a segment between two minority images (within rounding)
        best = min(np.abs(sample - (a + t * (b - a))).max() for a in flat for b in flat for t in np.linspace(0, 1, 201))
        assert best <= 1.0


@pytest.mark.parametrize("channels", [1, 3])
def test_clahe_and_hist_eq_keep_shape_and_dtype(host, channels):
    images = np.random.default_rng(0).integers(60, 120, (4, 28, 28, channels), dtype=np.uint8)
    for name in ("clahe", "hist-eq"):
        out = host.create("preprocessor", name).fit(images, np.zeros(4)).transform(images)
        assert out.shape == images.shape and out.dtype == np.uint8
        assert out.std() > images.std(), f"{name} should stretch a low-contrast image"


def _fit(host, regularizers, epochs=6, lr=1e-3, val_out=None):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (64, 8, 8, 1), dtype=np.uint8)
    y = np.arange(64) % 2
    train_xy, val_xy = to_device(x[:48], y[:48], torch.device("cpu")), to_device(x[48:], y[48:], torch.device("cpu"))
    torch.manual_seed(0)
    model = host.create("model", "cnn", {"widths": [4], "hidden": 8}).build(1, 2, 8)
    regs = [host.create("regularizer", name, params) for name, params in regularizers]
    for reg in regs:
        model = reg.configure_model(model)
    config = Train(epochs=epochs, batch_size=16, optimizer={"name": "adam", "lr": lr}, device="cpu")
    result = train(
        model,
        train_xy,
        val_xy,
        config=config,
        epochs=epochs,
        augmenters=[],
        regularizers=regs,
        seed=0,
        num_classes=2,
    )
    if val_out is not None:
        val_out.append(evaluate_loss(model, val_xy, 64, *fast_path(config, torch.device("cpu")))[0])
    return result, model


def test_early_stopping_stops_and_restores_the_best_epoch(host):
    final = []
    result, _ = _fit(host, [("early-stopping", {"patience": 2})], epochs=40, lr=0.05, val_out=final)
    losses = [h["val_loss"] for h in result.history]
    assert result.epochs_run < 40
    assert min(losses[-2:]) >= min(losses[:-2])  # stopped after two non-improving epochs
    assert final[0] == pytest.approx(min(losses)), "the best epoch's weights are restored"


def test_reduce_on_plateau_lowers_the_learning_rate(host):
    result, _ = _fit(host, [("reduce-on-plateau", {"patience": 0, "factor": 0.1})], epochs=12, lr=0.05)
    assert result.history[-1]["lr"] < result.history[0]["lr"]


def test_training_reports_warm_throughput(host):
    result, _ = _fit(host, [], epochs=3)
    assert result.warm and result.images_per_s > 0 and len(result.history) == 3
