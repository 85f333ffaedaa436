"""The technique catalogue: behaviour of each technique beyond the conformance kit, and the shipped suites."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from octbench_plugins.losses import focal_loss
from sklearn.neighbors import NearestNeighbors

from octbench.errors import OctbenchError
from octbench.plan import dependencies
from octbench.plan.check import check_references
from octbench.plugins import PluginHost, distribution_of
from octbench.suite import resolve_variants
from octbench.suite.file import load_suite

SUITES = sorted((Path(__file__).resolve().parents[1] / "suites").glob("*.yaml"))
HAS_TIMM = importlib.util.find_spec("timm") is not None


@pytest.fixture(scope="module")
def host():
    return PluginHost.load()


def imbalanced_images(seed=0):
    rng = np.random.default_rng(seed)
    labels = np.array([0] * 60 + [1] * 15 + [2] * 9)
    images = (rng.normal(90 + 20 * labels[:, None, None, None], 60, (84, 6, 6, 1))).clip(0, 255).astype(np.uint8)
    return images, labels


def assert_on_neighbour_segments(images, labels, out, out_labels, k):
    """Each synthetic image lies (within rounding) on a segment from a same-class image to one of its k
    nearest same-class neighbours."""
    synthetic, synthetic_labels = out[len(images) :], out_labels[len(images) :]
    flat = images.reshape(len(images), -1).astype(float)
    for cls in np.unique(synthetic_labels):
        members = flat[labels == cls]
        neighbours = NearestNeighbors(n_neighbors=k + 1).fit(members).kneighbors(members, return_distance=False)[:, 1:]
        starts = np.repeat(members, k, axis=0)
        ends = members[neighbours.reshape(-1)]
        direction = ends - starts
        for sample in synthetic[synthetic_labels == cls].reshape(-1, flat.shape[1]).astype(float):
            t = np.clip(((sample - starts) * direction).sum(1) / np.maximum((direction**2).sum(1), 1e-9), 0, 1)
            residual = np.abs(sample - (starts + t[:, None] * direction)).max(1)
            assert residual.min() <= 1.0, "a synthetic image is not on any neighbour segment"


@pytest.mark.parametrize("name", ["smote", "device-smote"])
def test_both_smotes_make_the_same_counts_on_neighbour_segments(host, name):
    images, labels = imbalanced_images()
    out, out_labels = host.create("preprocessor", name, {"k_neighbors": 3}).fit_resample(images, labels, random_state=0)
    assert np.bincount(out_labels).tolist() == [60, 60, 60]
    np.testing.assert_array_equal(out[: len(images)], images)
    assert out.dtype == np.uint8
    assert_on_neighbour_segments(images, labels, out, out_labels, k=3)


def test_device_smote_follows_the_sampling_strategy(host):
    images, labels = imbalanced_images()
    _, out_labels = host.create("preprocessor", "device-smote", {"sampling_strategy": "minority"}).fit_resample(
        images, labels, random_state=0
    )
    assert np.bincount(out_labels).tolist() == [60, 15, 60]


def test_device_smote_equals_smote_given_the_same_seed(host):
    images, labels = imbalanced_images(seed=4)
    reference = host.create("preprocessor", "smote", {"k_neighbors": 4}).fit_resample(images, labels, random_state=9)
    device = host.create("preprocessor", "device-smote", {"k_neighbors": 4}).fit_resample(
        images, labels, random_state=9
    )
    np.testing.assert_array_equal(device[0], reference[0])
    np.testing.assert_array_equal(device[1], reference[1])


def test_torch_neighbours_match_scikit_learn():
    from octbench_plugins.device_smote import TorchNeighbours

    points = np.random.default_rng(2).normal(size=(300, 50)).astype(np.float32)  # continuous: no distance ties
    ours, theirs = TorchNeighbours(n_neighbors=4).fit(points), NearestNeighbors(n_neighbors=4).fit(points)
    for queries in (points, None, points[:20] + 0.1):  # itself (self first), None (self left out), other points
        distances, indices = ours.kneighbors(queries)
        expected_distances, expected_indices = theirs.kneighbors(queries)
        np.testing.assert_array_equal(indices, expected_indices)
        np.testing.assert_allclose(distances, expected_distances, rtol=1e-4, atol=1e-3)
    graph = ours.kneighbors_graph(points, mode="distance") - theirs.kneighbors_graph(points, mode="distance")
    assert abs(graph).max() < 1e-3
    with pytest.raises(ValueError, match="n_neighbors <= n_samples_fit"):
        TorchNeighbours(n_neighbors=5).fit(points[:3]).kneighbors(points[:3])


@pytest.mark.parametrize("name", ["borderline-smote", "adasyn", "random-oversample", "random-undersample"])
def test_other_resamplers_balance_classes(host, name):
    images, labels = imbalanced_images()
    _, out_labels = host.create("preprocessor", name).fit_resample(images, labels, random_state=0)
    counts = np.bincount(out_labels)
    assert counts.max() - counts.min() <= 0.2 * counts.max() or name == "adasyn"
    assert counts[1] != 15 or name == "random-undersample"


def test_normalize_is_fitted_on_the_training_part(host):
    train = np.full((10, 4, 4, 1), 100, dtype=np.uint8)
    train[5:] = 200
    other = np.full((3, 4, 4, 1), 250, dtype=np.uint8)
    step = host.create("preprocessor", "normalize").fit(train, np.zeros(10))
    out = step.transform(train)
    assert out.dtype == np.float32 and abs(out.mean()) < 1e-5 and abs(out.std() - 1) < 1e-4
    assert step.transform(other).mean() == pytest.approx((250 / 255 - 150 / 255) / (50 / 255), rel=1e-4)


def test_focal_loss_reduces_to_cross_entropy_and_weights_like_it():
    logits, targets = torch.randn(16, 4), torch.arange(16) % 4
    weight = torch.tensor([1.0, 2.0, 0.5, 1.5])
    assert focal_loss(logits, targets, gamma=0) == pytest.approx(float(F.cross_entropy(logits, targets)), rel=1e-5)
    weighted = F.cross_entropy(logits, targets, weight=weight)
    assert focal_loss(logits, targets, weight=weight, gamma=0) == pytest.approx(float(weighted), rel=1e-5)
    assert focal_loss(logits, targets, gamma=2) < F.cross_entropy(logits, targets)


def test_mixup_and_cutmix_blend_targets(host):
    for name in ("mixup", "cutmix"):
        reg = host.create("regularizer", name, {"alpha": 1.0})
        torch.manual_seed(0)
        reg.configure_model(torch.nn.Linear(1, 1))
        reg.configure_loss({}, np.ones(3))
        images, labels = torch.rand(8, 1, 12, 12), torch.arange(8) % 3
        mixed, targets = reg.on_batch(images, labels, torch.Generator().manual_seed(0))
        assert mixed.shape == images.shape and targets.shape == (8, 3)
        assert torch.allclose(targets.sum(1), torch.ones(8))
        assert not torch.equal(mixed, images)


def test_dropout_sets_or_inserts_before_the_classifier(host):
    reg = host.create("regularizer", "dropout", {"p": 0.3})
    seed = reg.configure_model(host.create("model", "seed-cnn").build(1, 4, 28))
    assert [m.p for m in seed.modules() if isinstance(m, torch.nn.Dropout)] == [0.3]
    resnet = reg.configure_model(host.create("model", "resnet18").build(1, 4, 28))
    assert isinstance(resnet.fc, torch.nn.Sequential) and resnet.fc[0].p == 0.3
    assert resnet(torch.rand(2, 1, 28, 28)).shape == (2, 4)


def test_ema_ends_with_averaged_weights(host):
    reg = host.create("regularizer", "ema", {"decay": 0.5})
    model = torch.nn.Linear(2, 1)
    reg.configure_model(model)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    reg.after_step(model)
    reg.on_train_end(model)
    assert torch.allclose(model.weight, start + 0.5)


@pytest.mark.parametrize(
    ("name", "params", "expect"),
    [
        ("cosine", {"min_lr": 0.0}, lambda lrs: lrs[-1] < 0.01 * lrs[0]),
        ("one-cycle", {"max_lr_factor": 10}, lambda lrs: max(lrs) > 5 * lrs[0] and lrs[-1] < lrs[0]),
        (
            "multistep",
            {"milestones": [0.5, 0.75]},
            lambda lrs: np.allclose(sorted(set(np.round(lrs, 8)))[-3:], [1e-5, 1e-4, 1e-3]),
        ),
    ],
)
def test_schedules_shape_the_learning_rate(host, name, params, expect):
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    scheduler = host.create("regularizer", name, params).make_scheduler(optimizer, epochs=8, steps_per_epoch=5)
    lrs = []
    for _ in range(8):
        for _ in range(5):
            optimizer.step()
            if hasattr(scheduler, "step_batch"):
                scheduler.step_batch()
            lrs.append(optimizer.param_groups[0]["lr"])
        if hasattr(scheduler, "step_epoch"):
            scheduler.step_epoch({})
    assert expect(lrs), lrs


def test_optimizer_regularizer_switches_algorithm(host):
    options = host.create("regularizer", "optimizer", {"algorithm": "sgd", "nesterov": True, "lr": 0.1})
    changed = options.configure_optimizer(
        {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "momentum": 0.9, "nesterov": False}
    )
    assert changed["name"] == "sgd" and changed["nesterov"] and changed["lr"] == 0.1 and changed["weight_decay"] == 0


def test_resnets_match_medmnist_shapes(host):
    r18 = host.create("model", "resnet18").build(1, 4, 28)
    assert isinstance(r18.stem[0], torch.nn.Conv2d) and r18.stem[0].kernel_size == (3, 3)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in r18.modules())
    assert 11.1e6 < sum(p.numel() for p in r18.parameters()) < 11.3e6
    r50 = host.create("model", "resnet50").build(3, 4, 224)
    assert r50.stem[0].kernel_size == (7, 7)
    assert 23.4e6 < sum(p.numel() for p in r50.parameters()) < 23.6e6


@pytest.mark.skipif(HAS_TIMM, reason="timm is installed; this checks the message when it is not")
def test_timm_without_timm_is_a_clear_error(host):
    with pytest.raises(OctbenchError, match=r"needs the optional timm package.*octbench\[timm\]"):
        host.check("model", "timm", {"model_name": "resnet18"})


@pytest.mark.parametrize("suite_file", SUITES, ids=[p.stem for p in SUITES])
def test_shipped_suites_are_valid(host, suite_file):
    suite, text = load_suite(suite_file)
    variants = resolve_variants(suite)
    if suite_file.stem == "timm" and not HAS_TIMM:
        with pytest.raises(OctbenchError, match="timm"):
            check_references(suite, variants, host, text, str(suite_file))
        return
    if (
        suite_file.stem == "resolution"
        and not (Path(torch.hub.get_dir()) / "checkpoints/resnet18-f37072fd.pth").exists()
    ):
        # its pretrained variants need weights this machine lacks: the check names the file, and downloads nothing
        with pytest.raises(OctbenchError, match=r"download https://download.pytorch.org/models/resnet18-f37072fd.pth"):
            check_references(suite, variants, host, text, str(suite_file))
        return
    check_references(suite, variants, host, text, str(suite_file))


def test_every_builtin_technique_appears_in_a_shipped_suite(host):
    used: set[tuple[str, str]] = set()
    for suite_file in SUITES:
        suite, _ = load_suite(suite_file)
        used.add(("dataset", suite.dataset.name))
        used.add(("executor", suite.executor.name))
        used |= set(dependencies.of_run(host, suite, resolve_variants(suite)).plugins)
    builtins = [r for r in host.all() if distribution_of(r.cls)[0] == "octbench"]
    missing = [(r.kind, r.name) for r in builtins if r.kind != "dataset" and (r.kind, r.name) not in used]
    assert not missing, f"built-ins in no shipped suite: {missing}"
