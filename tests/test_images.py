"""Images in the report: the montage, each variant's errors and flips (McNemar's cells), and the near-duplicate
audit, in the page, the JSON export and `octbench audit`."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import time
from html import unescape

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from octbench.cell import attribution
from octbench.cli import cli
from octbench.dataset import load_data
from octbench.plugins import PluginHost
from octbench.report import audit as near
from octbench.report import pipelines
from octbench.report.analysis import Options, analyse
from octbench.report.collect import Cell, VariantResults, load
from octbench.report.images import ERRORS, FLIPS, PER_CLASS, flips, mean_maps, select
from octbench.suite import PluginRef
from tests.conftest import REPO


def analysed(numbers_dir):
    results = load([numbers_dir])
    return results, analyse(results, Options.of_suite(results.runs[0].suite))


def test_fixed_and_broken_images_are_mcnemars_counts_for_every_variant(numbers_dir):
    _, analysis = analysed(numbers_dir)
    found = flips(analysis)
    compared = [a for a in analysis.variants if a.variant is not analysis.reference]
    assert compared and all(a.test_split is not None and a.test_split.versus is not None for a in compared)
    for a in compared:
        f, t = found[a.variant.key], a.test_split
        assert len(f.fixed) == t.versus.mcnemar.only_first_correct, a.variant.key
        assert len(f.broke) == t.versus.mcnemar.only_second_correct, a.variant.key
        # every error is one, and the off-diagonal of the ensemble's confusion matrix counts them all
        assert sorted(f.errors) == np.flatnonzero(t.scores.predicted != t.y_true).tolist()
        assert len(f.errors) == int(t.confusion.sum() - np.trace(t.confusion))
    reference = found[analysis.reference.key]
    assert reference.fixed == [] and reference.broke == []

    html = unescape((numbers_dir / "report.html").read_text())
    for a in compared:
        m = a.test_split.versus.mcnemar
        s = "" if m.only_first_correct == 1 else "s"
        assert f"Fixed against baseline: {m.only_first_correct} test image{s} only this variant got right" in html
        shown = min(FLIPS, m.only_second_correct)
        assert html.count(f'aria-label="images {a.variant.key} broke"') == 1
        assert (
            len(
                re.findall(rf'aria-label="images {re.escape(a.variant.key)} broke">(.*?)</div>', html)[0].split(
                    'class="thumb"'
                )
            )
            - 1
            == shown
        )

    exported = json.loads(
        CliRunner().invoke(cli, ["report", str(numbers_dir), "--format", "json", "--output", "-"]).output
    )
    for a in compared:
        listed = exported["images"]["variants"][a.variant.key]
        assert listed["fixed"] == found[a.variant.key].fixed and listed["broke"] == found[a.variant.key].broke
        assert listed["errors_total"] == len(found[a.variant.key].errors)
        assert listed["errors"] == found[a.variant.key].errors[:ERRORS]


def test_the_montage_shows_each_class_of_each_split_and_the_export_lists_the_same_rows(numbers_dir):
    results, analysis = analysed(numbers_dir)
    data = load_data(PluginRef(name=results.dataset["name"], params=results.dataset["params"]), PluginHost.load(), None)
    montage = select(results, analysis, data).montage
    labels = {"train": data.train_labels, "val": data.val_labels, "test": data.test_labels}
    for split, by_class in montage.items():
        for c, name in enumerate(results.class_names):
            rows = by_class[name]
            assert len(rows) == min(PER_CLASS, int(np.sum(labels[split] == c)))
            assert all(labels[split][i] == c for i in rows), (split, name)
    assert select(results, analysis, data).montage == montage  # drawn once, the same for every report
    html = unescape((numbers_dir / "report.html").read_text())
    for split in ("train", "val", "test"):
        for name in results.class_names:
            assert f'aria-label="{split} images of class {name}"' in html
    exported = json.loads(
        CliRunner().invoke(cli, ["report", str(numbers_dir), "--format", "json", "--output", "-"]).output
    )
    assert exported["images"]["montage"] == montage
    # every view's images are listed: the pipelines' training rows and the test rows the maps explain
    assert exported["images"]["pipeline"] == {
        "split": "train",
        "indices": pipelines.rows(data.train_labels, len(results.class_names), results.runs[0].seeds[0]).tolist(),
    }
    explained = attribution.rows(data.test_labels, len(results.class_names)).tolist()
    assert exported["images"]["grad_cam"] == {"split": "test", "indices": explained}
    assert "near_duplicates" in exported["images"]


def test_without_its_dataset_the_page_says_why_it_shows_no_image_and_keeps_every_number(numbers_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(numbers_dir, copy)
    with sqlite3.connect(copy / "results.sqlite") as conn:
        (raw,) = conn.execute("SELECT dataset_json FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        dataset = json.loads(raw)
        conn.execute("UPDATE runs SET dataset_json = ?", (json.dumps({**dataset, "md5": "0" * 32}),))
    result = CliRunner().invoke(cli, ["report", str(copy)])
    assert result.exit_code == 0, result.output
    html = unescape((copy / "report.html").read_text())
    assert "No image is shown: the dataset could not be loaded here: the dataset loaded here has MD5" in html
    assert 'class="thumb"' not in html
    assert "Fixed against baseline" not in html
    assert "McNemar" in html and "Leaderboard" in html


def planted(seed: int = 0):
    """Synthetic OCT pool and test images with known near-copies: pool 10 of pool 3 (noise and brightness), pool 40
    of pool 7 (a copy), test 5 of pool 20 (contrast), test 9 of pool 33 (a copy)."""
    data = load_data(PluginRef(name="synthetic-oct", params={"n_train": 300, "n_val": 40, "n_test": 60}),
                     PluginHost.load(), None)  # fmt: skip
    pool, test = data.pool[0].copy(), data.test_images.copy()
    rng = np.random.default_rng(seed)
    pool[10] = np.clip(pool[3] * 1.1 + 5 + rng.normal(0, 2, pool[3].shape), 0, 255).astype(np.uint8)
    pool[40] = pool[7]
    test[5] = np.clip(pool[20] * 0.8 + 20, 0, 255).astype(np.uint8)
    test[9] = pool[33]
    return pool, test


def test_planted_near_duplicates_are_found_across_folds_and_across_train_and_test():
    pool, test = planted()
    audit = near.audit(pool, test)
    within, across = audit.within_pool, audit.test_to_pool
    assert set(np.flatnonzero(within.near).tolist()) == {3, 10, 7, 40}
    assert within.neighbours[10] == 3 and within.neighbours[40] == 7 and within.distances[40] < 1e-3
    assert set(np.flatnonzero(across.near).tolist()) == {5, 9}
    assert across.neighbours[5] == 20 and across.neighbours[9] == 33
    assert [(i, j) for i, j, _ in within.closest(2)] in ([(7, 40), (3, 10)], [(40, 7), (3, 10)])
    assert within.rate == pytest.approx(4 / len(pool)) and across.rate == pytest.approx(2 / len(test))
    # unrelated images sit far above the threshold: nothing else is flagged
    assert np.min(within.distances[~within.near]) > 2 * near.THRESHOLD

    cached = near.Audit.from_arrays(audit.arrays(), near.THRESHOLD)
    assert cached.within_pool.rate == within.rate and cached.test_to_pool.closest(2) == across.closest(2)


def test_a_pool_with_near_copies_the_test_split_lacks_makes_the_summary_say_cv_may_be_optimistic():
    pool, test = planted()
    pool[100:120] = pool[200:220]  # 40 pool images (11.8 %) now have a near-copy, and no test image gains one
    audit = near.audit(pool, test[10:])
    assert audit.optimistic
    assert "CV may be optimistic" in audit.sentence()
    assert not near.audit(*planted()).optimistic


def test_blank_frames_are_counted_apart_not_called_duplicates_of_each_other():
    """Two blank or near-constant frames normalise to the same vector: every such frame was a 'near-duplicate'."""
    pool, test = planted()
    pool[50], pool[60], pool[70] = 0, 128, 255
    pool[80] = 30 + (np.arange(pool[80].size).reshape(pool[80].shape) % 2)  # one grey level of texture
    test[0] = 0
    audit = near.audit(pool, test)
    within, across = audit.within_pool, audit.test_to_pool
    assert set(np.flatnonzero(within.blank).tolist()) == {50, 60, 70, 80} and within.blank.sum() == 4
    assert set(np.flatnonzero(within.near).tolist()) == {3, 10, 7, 40}, "no blank frame is anyone's duplicate"
    assert not np.isin(within.neighbours[~within.blank], [50, 60, 70, 80]).any()
    assert within.rate == pytest.approx(4 / (len(pool) - 4)) and across.rate == pytest.approx(2 / (len(test) - 1))
    assert all(50 not in pair[:2] for pair in within.closest(10))
    assert "(blank or near-constant frames, counted apart: 4 pool and 1 test)" in audit.sentence()


def test_the_audit_shrinks_images_in_chunks_so_memory_does_not_grow_with_their_size():
    """A float copy of the whole pool came first: about 22 GB for OCTMNIST at 224 px."""
    import tracemalloc

    images = np.random.default_rng(0).integers(0, 256, (1024, 96, 96, 3), dtype=np.uint8)
    whole = images.size * 4  # bytes of one float32 copy of every image
    tracemalloc.start()
    try:
        rows, blank = near.features(images)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows.shape == (1024, 32 * 32 * 3) and not blank.any()
    assert peak < 0.4 * whole, f"{peak / 2**20:.0f} MiB at the peak, against {whole / 2**20:.0f} MiB for a whole copy"


def test_octbench_audit_reports_a_dataset_before_any_training(shared_data):
    result = CliRunner().invoke(cli, ["audit", "breastmnist", "--data-dir", str(shared_data), "--json", "--show", "3"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["pool"]["images"] == 546 + 78 and found["test"]["images"] == 156
    assert 0 < found["pool"]["rate"] < 1 and len(found["pool"]["closest"]) == 3
    test_index, pool_index, distance = found["test"]["closest"][0]
    with np.load(shared_data / "breastmnist.npz") as data:
        pool = np.concatenate([data["train_images"], data["val_images"]])
        test = data["test_images"]
    assert distance < 1e-3 and np.array_equal(test[test_index], pool[pool_index])  # an exact copy

    text = CliRunner().invoke(cli, ["audit", "breastmnist", "--data-dir", str(shared_data)])
    assert text.exit_code == 0 and "of CV-pool images have a near-duplicate elsewhere in the pool" in text.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "unknown dataset 'nope'"),
        (["synthetic-oct", "--param", "bogus=1"], "synthetic-oct has no parameter 'bogus'"),
        (["synthetic-oct", "--param", "size"], "--param 'size': write KEY=VALUE"),
        (["synthetic-oct", "--threshold", "3"], "--threshold"),
    ],
)
def test_a_bad_audit_request_is_one_line_and_exit_2(args, message):
    result = CliRunner().invoke(cli, ["audit", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def lesion_images(n: int, rng: np.random.Generator):
    """Gray speckle; class 1 carries a bright 5 x 5 lesion at a random place (returned), class 0 none."""
    x = rng.normal(80, 12, (n, 1, 28, 28))
    y = rng.integers(0, 2, n)
    where = rng.integers(3, 20, (n, 2))
    for i in np.flatnonzero(y == 1):
        r, c = where[i]
        x[i, 0, r : r + 5, c : c + 5] += 90
    return torch.as_tensor(x.clip(0, 255).astype(np.uint8)), torch.as_tensor(y), where


def test_the_activation_map_peaks_inside_the_lesion_that_decides_the_class():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x, y, _ = lesion_images(1200, rng)
    test_x, test_y, where = lesion_images(200, rng)
    model = PluginHost.load().create("model", "seed-cnn", {}).build(1, 2, 28)
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(4):
        model.train()
        for batch in torch.randperm(len(x)).split(64):
            loss = torch.nn.functional.cross_entropy(model(x[batch].float() / 255), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(test_x.float() / 255).argmax(1).numpy()
    right = np.flatnonzero((test_y.numpy() == 1) & (predicted == 1))
    assert len(right) > 50
    maps, layer = attribution.grad_cam(model, test_x[right], np.ones(len(right), np.int64))
    assert maps.dtype == np.float16 and maps.shape == (len(right), 7, 7) and float(maps.max()) == 1.0
    assert layer == "10"  # the ReLU after the third convolution and its batch norm: the last feature map at 7x7
    peaks = [np.unravel_index(np.argmax(m), m.shape) for m in attribution.upsampled(maps, (28, 28))]
    inside = [
        r0 - 2 <= r < r0 + 7 and c0 - 2 <= c < c0 + 7 for (r, c), (r0, c0) in zip(peaks, where[right], strict=True)
    ]
    assert np.mean(inside) >= 0.8, np.mean(inside)
    assert not model.training  # explaining leaves the model as it found it


class PatchTokens(torch.nn.Module):
    """A vision transformer in miniature: a patch embedding (the only convolution), then layers over tokens."""

    def __init__(self):
        super().__init__()
        self.patch = torch.nn.Conv2d(1, 8, 7, stride=7)
        self.mix = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.mix(self.patch(x).flatten(2).transpose(1, 2)).mean(1))


def test_maps_come_from_the_last_feature_stage_and_a_token_model_has_none():
    """Grad-CAM took the last registered Conv2d: inside a ResNet's residual branch before its batch norm (the skip
    path left out), and a vision transformer's first layer. A ResNet's map is now its trunk's output, after the last
    residual sum; a model whose last map is followed by tokens says it has none; a plugin may name its layer."""
    host = PluginHost.load()
    resnet = host.create("model", "resnet18", {}).build(1, 4, 28)
    images = torch.rand(3, 1, 28, 28)
    maps, layer = attribution.grad_cam(resnet, images, np.array([0, 1, 2]))
    assert layer == "stages" and maps.shape == (3, 4, 4)
    assert attribution.grad_cam(resnet, images, np.array([0, 1, 2]), "stages.2")[1] == "stages.2"
    with pytest.raises(attribution.Unavailable, match=r"its last spatial map \('patch'\) is followed by token layers"):
        attribution.grad_cam(PatchTokens(), torch.rand(2, 1, 28, 28), np.array([0, 1]))


def test_every_class_gets_an_explained_image_however_many_classes_there_are():
    """With 7 or more classes the 12 lowest indices of two per class left some classes out."""
    labels = np.repeat(np.arange(11), 5)  # each class's images together: class 10's first image is number 50
    chosen = attribution.rows(labels, 11)
    assert sorted(set(labels[chosen].tolist())) == list(range(11)) and len(chosen) == 12
    many = np.tile(np.arange(14), 3)  # more classes than MOST: one each
    assert sorted(many[attribution.rows(many, 14)].tolist()) == list(range(14))
    two = attribution.rows(np.repeat(np.arange(4), 5), 4)
    assert np.bincount(np.repeat(np.arange(4), 5)[two]).tolist() == [2, 2, 2, 2]


def test_a_model_without_a_convolution_has_no_map_and_says_so():
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 2))
    with pytest.raises(attribution.Unavailable, match="Sequential has no 2-D convolution"):
        attribution.grad_cam(flat, torch.zeros(2, 1, 28, 28, dtype=torch.uint8), np.array([0, 1]))
    variant = VariantResults("mlp", "mlp", "run", "variant", {})
    variant.cells.append(Cell(0, 0, {}, {}, {}, [], {}, {}, settings={"attribution": {"unavailable": "no conv"}}))
    assert mean_maps(variant) == "no conv"


@pytest.mark.slow
def test_every_cell_stores_maps_of_the_same_test_images_and_the_page_draws_them(run_dir):
    """What trained cells store (the maps a cell computes from its model): a trained run, in the slow tier."""
    results, _ = analysed(run_dir)
    labels = next(c.test.y_true for c in results.variants[0].cells)
    expected = attribution.rows(labels, len(results.class_names))
    assert len(expected) == min(attribution.MOST, attribution.PER_CLASS * len(results.class_names))
    for variant in results.variants:
        for cell in variant.cells:
            stored = cell.attributions["test"]
            assert np.array_equal(stored["indices"], expected)
            assert stored["maps"].shape[0] == len(expected) and 0 <= stored["maps"].min() <= stored["maps"].max() <= 1
            assert cell.settings["attribution"]["method"].startswith("Grad-CAM")
        indices, mean = mean_maps(variant)
        assert np.array_equal(indices, expected) and mean.shape == stored["maps"].shape
    html = unescape((run_dir / "report.html").read_text())
    for variant in results.variants:
        tiles = re.findall(rf'aria-label="activation maps of {re.escape(variant.key)}">(.*?)</div>', html)
        assert tiles and tiles[0].count('class="thumb"') == len(expected)


def test_each_pipeline_is_shown_step_by_step_on_the_same_training_images():
    host = PluginHost.load()
    data = load_data(PluginRef(name="synthetic-oct", params={"n_train": 300, "n_val": 40, "n_test": 60}), host, None)
    shown = pipelines.rows(data.train_labels, 4, seed=0)
    assert len(shown) == pipelines.IMAGES and sorted(data.train_labels[shown].tolist()) == [0, 1, 2, 3]
    assert np.array_equal(shown, pipelines.rows(data.train_labels, 4, seed=0))  # the same for every variant
    spec = {
        "preprocessors": [{"name": "clahe", "params": {"clip_limit": 3.0}}, {"name": "smote"}],
        "augmenters": [{"name": "batch-augment", "params": {"hflip": 1.0}}],
    }
    stages = pipelines.stages(spec, host, data, shown, seed=0)
    assert [s.label for s in stages] == [
        "raw",
        "clahe(clip_limit=3.0)",
        "smote",
        *[f"batch-augment(hflip=1.0), draw {d}" for d in (1, 2, 3)],
    ]
    raw, clahe, smote, *draws = stages
    assert np.array_equal(np.stack(raw.images), data.train_images[shown])
    expected = host.create("preprocessor", "clahe", {"clip_limit": 3.0}).transform(data.train_images[shown])
    assert np.array_equal(np.stack(clahe.images), expected) and clahe.note == ""  # stateless: as the run did it
    assert smote.images == [] and smote.note == pipelines.RESAMPLES
    # a certain horizontal flip of the CLAHE'd images, in [0, 1] as the trainer gives them
    for draw in draws:
        assert draw.augmented and draw.span == (0.0, 1.0)
        assert np.allclose(np.stack(draw.images) * 255, expected[:, :, ::-1], atol=1e-3)
    assert pipelines.displayable(draws[0].images[0], *draws[0].span).dtype == np.uint8

    # a step that learns from data is not fitted here (it learns from each fold's training part): it and every step
    # after it are named without a picture
    spec["preprocessors"].insert(1, {"name": "normalize"})
    stages = pipelines.stages(spec, host, data, shown, seed=0)
    assert [s.label for s in stages] == ["raw", "clahe(clip_limit=3.0)", "normalize"]
    assert stages[-1].images == [] and stages[-1].note == pipelines.FITTED


def test_the_page_shows_every_variants_pipeline(numbers_dir):
    html = unescape((numbers_dir / "report.html").read_text())
    assert 'id="pipelines"' in html
    for name in ("baseline", "flip", "smote", "class-weights"):
        assert f'aria-label="pipeline output of {name}"' in html
        assert f'aria-label="{name}: raw"' in html
    for d in (1, 2, 3):
        assert f'aria-label="flip: batch-augment(hflip=0.5), draw {d}"' in html
    assert "resamples the training part (adds or drops images); no image changes" in html


def test_the_committed_example_shows_every_view_and_stays_under_3_mb():
    example = REPO / "reports" / "breastmnist-example" / "report.html"
    assert example.stat().st_size < 3_000_000
    html = unescape(example.read_text())
    for text in ('id="images"', 'id="duplicates"', 'id="pipelines"', 'id="looks"', "Fixed against baseline"):
        assert text in html, text
    for name in ("baseline", "early-stopping", "clahe", "augment"):
        assert f'aria-label="activation maps of {name}"' in html and f'aria-label="test errors of {name}"' in html
    assert "of test images in the pool; the test split is not fully independent" in html  # the summary says so


@pytest.mark.serial
def test_a_pipeline_that_hangs_or_never_finished_a_cell_is_not_drawn(numbers_dir, monkeypatch):
    from octbench.report import images

    results, _ = analysed(numbers_dir)
    data = images.load_images(results)
    monkeypatch.setattr(pipelines, "SECONDS", 1)
    draw = pipelines.stages
    hanging = results.variants[1].spec

    def stages(spec, *args):  # a plugin stuck in its transform, for this variant
        if spec is hanging:
            time.sleep(30)
        return draw(spec, *args)

    monkeypatch.setattr(pipelines, "stages", stages)
    results.variants[2].cells = []
    started = time.monotonic()
    strips, _ = images._strips(results, images.plugin_host(results), data, np.array([0, 1]))
    assert time.monotonic() - started < 20
    assert "could not be drawn here: TimeLimitExceeded" in strips[results.variants[1].key][0][2]
    assert strips[results.variants[2].key] == [("", [], "not drawn: no cell of this variant finished")]
    assert strips[results.variants[0].key][0][0] == "raw"
