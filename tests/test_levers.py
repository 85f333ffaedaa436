"""The biggest levers as variants: input resolution per variant (paired folds, one report), starting weights for
the built-in ResNets (and timm's lookup), the geometry preprocessors and test-time augmentation."""

from __future__ import annotations

import hashlib
import html
import io
import re
import socket
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from octbench.cell.inference import AveragedViews, with_test_views
from octbench.cell.stack_model import unstackable
from octbench.cli import cli
from octbench.plugins import PluginHost
from octbench.report import collect
from octbench.report.analysis import analyse
from octbench.runner import run_suite
from tests.test_data import serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def host():
    return PluginHost.load()


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def held_out_rows(out, variant: str) -> dict[tuple[int, int], list[int]]:
    """Per (seed, fold), the pool rows a variant's cell held out, as the store recorded its predictions."""
    results = collect.load([out])
    found = next(v for v in results.variants if v.name == variant)
    return {(c.seed, c.fold): sorted(c.predictions["heldout"].indices.tolist()) for c in found.cells}


# --- resolution as a variant axis ------------------------------------------------------------------------------


SIZES = """
name: sizes
dataset: {name: synthetic-oct, n_train: 160, n_val: 40, n_test: 40}
cv: {folds: 2, seeds: [0], val_fraction: 0.2}
train: {epochs: 1, batch_size: 32, device: cpu}
defaults: {model: {name: cnn, widths: [8, 16], hidden: 16}}
variants:
  - name: baseline
  - name: px64
    dataset: {size: 64}
  - name: px64-tta
    dataset: {size: 64}
    regularizers: [{name: tta, shift: 1}]
"""


def test_sizes_are_variants_with_identical_folds_paired_verdicts_and_one_report(write_suite, tmp_path):
    out = tmp_path / "out"
    summary = run_suite(write_suite(SIZES), out=out, progress=False)
    assert (summary.done, summary.failed) == (6, 0)
    folds = {name: held_out_rows(out, name) for name in ("baseline", "px64", "px64-tta")}
    assert folds["baseline"] == folds["px64"] == folds["px64-tta"], "folds depend on labels and seed only"
    results = collect.load([out])
    dataset = results.dataset
    assert dataset["image_size"] == 28 and dataset["variants"]["px64"]["image_size"] == 64
    assert dataset["variants"]["px64"]["md5"] != dataset["md5"]
    analysis = analyse(results)
    compared = {a.variant.name: a.comparisons for a in analysis.variants}
    assert compared["px64"] and compared["px64-tta"], "64 px variants are compared, paired, with the 28 px reference"
    cells = {v.name: v.cells for v in results.variants}
    assert all(c.settings.get("test_views") == ["tta"] for c in cells["px64-tta"])
    assert not any("test_views" in c.settings for c in cells["px64"])
    page = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", (out / "report.html").read_text())))
    assert "dataset size=28→64" in page, "the report says which size each variant used"
    assert "+tta(shift=1)" in page, "the report names test-time augmentation"


def _side(tile) -> int:
    from PIL import Image

    with Image.open(io.BytesIO(__import__("base64").b64decode(tile.uri.split(",", 1)[1]))) as image:
        assert image.width == image.height
        return image.width


@pytest.mark.slow
def test_maps_and_tiles_are_drawn_over_the_image_each_model_saw(write_suite, tmp_path):
    """A pad variant's map of its padded canvas was stretched over the raw image, and a 64 px variant's tiles were
    shown at 28 px: each is now drawn at its own size, over its own pipeline's output."""
    from octbench.report import images

    text = SIZES.replace("  - name: px64-tta\n    dataset: {size: 64}\n    regularizers: [{name: tta, shift: 1}]\n",
                         "  - name: padded\n    preprocessors: [{name: pad, size: 40}]\n")  # fmt: skip
    out = tmp_path / "out"
    assert run_suite(write_suite(text), out=out, progress=False).done == 6
    results = collect.load([out])
    page = images.gallery(results, analyse(results))
    looks = {row: (tiles, why) for row, tiles, why in page.looks}
    # a map over a 28 px image is drawn at twice its size (56 px), over 40 and 64 px ones at their own
    assert {row: {_side(t) for t in tiles} for row, (tiles, _) in looks.items()} == {
        "image": {28}, "baseline": {56}, "px64": {64}, "padded": {40}
    }  # fmt: skip
    assert looks["baseline"][1] == "maps at its layer '6'"  # the ReLU after the second convolution and batch norm
    errors = {key: {_side(t) for t in views["errors"]} for key, views in page.variants.items()}
    assert errors == {"baseline": {28}, "px64": {64}, "padded": {28}}


def test_one_copy_of_each_size_is_loaded(write_suite, tmp_path, monkeypatch):
    from octbench import dataset
    from octbench.plan.run import plan_run

    monkeypatch.setattr(dataset, "_DATA", {})
    plan = plan_run(write_suite(SIZES), data_dir=str(tmp_path))
    assert set(map(id, plan.variant_data.values())) == {id(plan.data), id(plan.variant_data["px64"])}
    assert plan.variant_data["px64"] is plan.variant_data["px64-tta"], "one copy per size, shared by variants"
    assert len(dataset._DATA) == 2
    assert [t.config_hash for t in plan.tasks if t.variant.name == "px64"] != [
        t.config_hash for t in plan.tasks if t.variant.name == "baseline"
    ]


def test_a_variant_dataset_with_other_samples_is_refused_before_anything_runs(write_suite, tmp_path):
    path = write_suite(SIZES.replace("dataset: {size: 64}\n  - name: px64-tta", "dataset: {n_test: 44}\n  - name: x"))
    result = invoke("run", path, "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 2
    assert "its test labels differ from the suite's dataset" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def _npz(size: int, labels: dict[str, np.ndarray]) -> bytes:
    rng = np.random.default_rng(size)
    arrays = {}
    for split, y in labels.items():
        images = rng.integers(0, 120, (len(y), size, size), dtype=np.uint8)
        images[y == 1, size // 4 : size // 2, size // 4 : size // 2] = 230  # a bright patch marks class 1
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, y.reshape(-1, 1)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def test_medmnist_layout_files_at_28_and_64_px_download_from_a_local_server_and_pair(
    write_suite, tmp_path, monkeypatch
):
    from octbench.data.medmnist import INFO

    labels = {split: np.arange(n) % 2 for split, n in (("train", 60), ("val", 20), ("test", 24))}
    www = tmp_path / "www"
    www.mkdir()
    files = {"breastmnist.npz": _npz(28, labels), "breastmnist_64.npz": _npz(64, labels)}
    for name, payload in files.items():
        (www / name).write_bytes(payload)
    server = serve(www)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    md5 = {name: hashlib.md5(payload).hexdigest() for name, payload in files.items()}
    monkeypatch.setitem(INFO, "breastmnist", {**INFO["breastmnist"], "url": f"{base}/breastmnist.npz",
                        "MD5": md5["breastmnist.npz"], "url_64": f"{base}/breastmnist_64.npz",
                        "MD5_64": md5["breastmnist_64.npz"]})  # fmt: skip
    suite = write_suite("""
        name: breast-sizes
        dataset: {name: breastmnist}
        cv: {folds: 2, seeds: [0], val_fraction: 0.2}
        train: {epochs: 1, batch_size: 16, device: cpu}
        defaults: {model: {name: cnn, widths: [8, 16], hidden: 16}}
        variants:
          - name: baseline
          - name: px64
            dataset: {size: 64}
    """)
    data = tmp_path / "data"
    try:
        summary = run_suite(suite, out=tmp_path / "out", data_dir=str(data), progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert (summary.done, summary.failed) == (4, 0)
    assert sorted(p.name for p in data.iterdir()) == ["breastmnist.npz", "breastmnist_64.npz"], "both downloaded"
    assert held_out_rows(tmp_path / "out", "baseline") == held_out_rows(tmp_path / "out", "px64")
    results = collect.load([tmp_path / "out"])
    assert results.dataset["variants"]["px64"]["md5"] == md5["breastmnist_64.npz"]
    assert next(a for a in analyse(results).variants if a.variant.name == "px64").comparisons


# --- starting weights -----------------------------------------------------------------------------------------


def torchvision_name(key: str) -> str:
    key = re.sub(r"^stem\.0\.", "conv1.", key)
    key = re.sub(r"^stem\.1\.", "bn1.", key)
    key = re.sub(r"^stages\.(\d)\.", lambda m: f"layer{int(m.group(1)) + 1}.", key)
    return key.replace(".shortcut.", ".downsample.")


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test: starting weights are read, never downloaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_weights_load_a_local_checkpoint_into_the_built_in_resnet(host, tmp_path, no_network):
    source = host.create("model", "resnet18", {"stem": "imagenet"}).build(3, 1000, 64)
    path = tmp_path / "resnet18-imagenet-layout.pth"
    torch.save({torchvision_name(k): v for k, v in source.state_dict().items()}, path)  # torchvision's names
    model = host.create("model", "resnet18", {"weights": str(path)}).build(1, 4, 28)
    mine, theirs = model.state_dict(), source.state_dict()
    assert model.stem[0].kernel_size == (7, 7), "the checkpoint's stem decides the stem"
    torch.testing.assert_close(mine["stem.0.weight"], theirs["stem.0.weight"].sum(1, keepdim=True))
    for key in theirs:
        if key.startswith("fc.") or key == "stem.0.weight":
            continue
        assert torch.equal(mine[key], theirs[key]), key
    assert mine["fc.weight"].shape == (4, 512), "the classifier is fresh, for the data's classes"
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 4)
    # the file's content is part of every stored result's key (octbench.plan.dependencies)
    assert host.create("model", "resnet18", {"weights": str(path)}).input_files() == [path]
    assert host.create("model", "resnet18", {}).input_files() == []


def test_freeze_trains_the_classifier_only_and_is_never_stacked(host, tmp_path):
    path = tmp_path / "own.pt"
    torch.save(host.create("model", "resnet18", {}).build(1, 4, 28).state_dict(), path)
    model = host.create("model", "resnet18", {"weights": str(path), "freeze": True}).build(1, 4, 28)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    assert "frozen" in unstackable(model)


def test_pretrained_reads_torch_hub_cache_and_never_downloads(host, tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(Exception, match=r"download https://download.pytorch.org/models/resnet18-f37072fd.pth to "):
        host.check("model", "resnet18", {"pretrained": True})
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    source = host.create("model", "resnet18", {"stem": "imagenet"}).build(3, 1000, 64)
    torch.save({torchvision_name(k): v for k, v in source.state_dict().items()}, cached)
    model = host.create("model", "resnet18", {"pretrained": True}).build(3, 2, 64)
    assert torch.equal(model.stages[3][1].conv2.weight, source.stages[3][1].conv2.weight)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("{name: resnet18, weights: /nowhere/resnet18.pth}", "no checkpoint at /nowhere/resnet18.pth"),
        ("{name: resnet18, pretrained: true}", "download https://download.pytorch.org/models/resnet18-f37072fd.pth"),
        ("{name: resnet18, freeze: true}", "freeze needs start weights"),
    ],
)
def test_absent_weights_are_one_clear_line_and_exit_2(write_suite, tmp_path, monkeypatch, params, message):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = write_suite(f"""
        name: weights
        dataset: {{name: synthetic-oct, n_train: 160, n_val: 40, n_test: 40}}
        variants:
          - name: baseline
            model: {params}
    """)
    result = invoke("check", path)
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_timm_pretrained_and_weights_go_through_timm_offline(host, tmp_path, monkeypatch):
    """timm's own loader reads the file (its ``pretrained_cfg_overlay``), found in the Hugging Face cache without a
    network call; where no copy is cached the error names the repository. Checked against a stand-in timm with
    timm's API, as the real one needs a torchvision that matches this CPU-only torch."""
    import sys
    import types

    from octbench_plugins import timm_models

    made = []
    cfg = types.SimpleNamespace(hf_hub_id="timm/resnet18.a1_in1k", url="")
    fake = types.SimpleNamespace(
        list_models=lambda: ["resnet18"],
        models=types.SimpleNamespace(get_pretrained_cfg=lambda name: cfg),
        create_model=lambda name, **kw: made.append(kw) or torch.nn.Sequential(torch.nn.Linear(2, 2)),
    )
    cache = {}
    hub = types.SimpleNamespace(try_to_load_from_cache=lambda repo, filename: cache.get((repo, filename)))
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    monkeypatch.setattr(timm_models, "_timm", lambda: fake)
    with pytest.raises(Exception, match=r"download https://huggingface.co/timm/resnet18.a1_in1k"):
        host.check("model", "timm", {"model_name": "resnet18", "pretrained": True})
    cache["timm/resnet18.a1_in1k", "model.safetensors"] = str(tmp_path / "model.safetensors")
    host.create("model", "timm", {"model_name": "resnet18", "pretrained": True}).build(1, 4, 28)
    assert made[-1]["pretrained"] is True and made[-1]["in_chans"] == 1 and made[-1]["num_classes"] == 4
    assert made[-1]["pretrained_cfg_overlay"] == {"file": str(tmp_path / "model.safetensors")}
    own = tmp_path / "own.pth"
    own.write_bytes(b"x")
    host.create("model", "timm", {"model_name": "resnet18", "weights": str(own)}).build(1, 4, 28)
    assert made[-1]["pretrained_cfg_overlay"] == {"file": str(own)}
    host.create("model", "timm", {"model_name": "resnet18"}).build(1, 4, 28)
    assert made[-1]["pretrained"] is False and made[-1]["pretrained_cfg_overlay"] is None


def test_timm_freeze_keeps_every_classifier_of_a_distilled_model_learning(host, tmp_path, monkeypatch):
    """A distilled DeiT names two classifiers in its pretrained_cfg, ('head', 'head_dist'): freeze raised a
    TypeError on the tuple. Both heads learn, the rest is frozen."""
    import types

    from octbench_plugins import timm_models

    class Distilled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pretrained_cfg = {"classifier": ("head", "head_dist")}
            self.body, self.head, self.head_dist = (torch.nn.Linear(2, 2) for _ in range(3))

    fake = types.SimpleNamespace(
        list_models=lambda: ["deit_tiny_distilled"], create_model=lambda name, **kw: Distilled()
    )
    monkeypatch.setattr(timm_models, "_timm", lambda: fake)
    own = tmp_path / "own.pth"
    own.write_bytes(b"x")
    params = {"model_name": "deit_tiny_distilled", "weights": str(own), "freeze": True}
    model = host.create("model", "timm", params).build(3, 4, 224)
    learning = sorted(name for name, p in model.named_parameters() if p.requires_grad)
    assert learning == ["head.bias", "head.weight", "head_dist.bias", "head_dist.weight"]


# --- geometry preprocessors -------------------------------------------------------------------------------------


def test_pad_centres_the_image_on_zeros_and_resize_names_its_interpolation(host):
    images = np.full((3, 28, 28, 1), 200, np.uint8)
    padded = host.create("preprocessor", "pad", {"size": 64}).transform(images)
    assert padded.shape == (3, 64, 64, 1) and padded.dtype == np.uint8
    assert (padded[:, 18:46, 18:46] == 200).all() and padded.sum() == images.sum()
    with pytest.raises(ValueError, match="larger than size 16"):
        host.create("preprocessor", "pad", {"size": 16}).transform(images)
    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))[None, :, :, None]
    nearest = host.create("preprocessor", "resize", {"size": 32, "interpolation": "nearest"}).transform(ramp)
    linear = host.create("preprocessor", "resize", {"size": 32, "interpolation": "linear"}).transform(ramp)
    assert nearest.shape == linear.shape == (1, 32, 32, 1)
    assert len(np.unique(nearest)) == 16 < len(np.unique(linear)), "nearest repeats pixels, linear blends them"
    rgb = host.create("preprocessor", "resize", {"size": 20}).transform(np.zeros((2, 28, 28, 3), np.uint8))
    assert rgb.shape == (2, 20, 20, 3)


def test_a_28_px_dataset_padded_for_a_larger_model(tiny_suite, tmp_path):
    path = tiny_suite("""
        - name: baseline
        - name: padded
          preprocessors: [{name: pad, size: 40}]
    """)
    summary = run_suite(path, out=tmp_path / "out", progress=False)
    assert (summary.done, summary.failed) == (4, 0)
    results = collect.load([tmp_path / "out"])
    padded = next(v for v in results.variants if v.name == "padded")
    base = next(v for v in results.variants if v.name == "baseline")
    assert padded.cells[0].settings["parameters"] > base.cells[0].settings["parameters"], "built for 40 px"


# --- test-time augmentation ---------------------------------------------------------------------------------------


def test_tta_averages_the_logits_of_its_views(host):
    tta = host.create("regularizer", "tta", {"hflip": True, "shift": 1})
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 2)).eval()
    x = torch.rand(4, 1, 8, 8)
    wrapped = with_test_views(model, [host.create("regularizer", "ema", {}), tta])
    assert isinstance(wrapped, AveragedViews) and wrapped.regularizers == [tta], "only regularizers with views"
    views = tta.test_views(x)
    assert len(views) == 10, "the image, four shifts, and the mirror image of each"
    assert torch.equal(views[5], x.flip(-1)) and torch.equal(views[1][:, :, :-1], x[:, :, 1:])
    assert not views[1][:, :, -1].any(), "a shift fills the uncovered border with zeros, not a wrapped row"
    with torch.no_grad():
        expected = torch.stack([model(v) for v in views]).mean(0)
        torch.testing.assert_close(wrapped(x), expected)
        assert not torch.allclose(wrapped(x), model(x)), "evaluation changes"
    assert with_test_views(model, [host.create("regularizer", "ema", {})]) is model


SPY_TTA = '''
from octbench import hookimpl
from octbench_plugins.tta import FlipShiftTTA
SEEN = "{log}"

class SpyTTA(FlipShiftTTA):
    """Test-time augmentation that writes the size of every batch it is asked to view."""
    name = "spy-tta"

    def on_batch(self, images, targets, generator):
        with open(SEEN, "a") as log:
            log.write(f"train {{len(images)}}\\n")
        return images, targets

    def test_views(self, images):
        with open(SEEN, "a") as log:
            log.write(f"views {{len(images)}}\\n")
        return super().test_views(images)

@hookimpl
def register_regularizers(register):
    register(SpyTTA)
'''


def test_tta_never_touches_training_batches(tiny_suite, tmp_path):
    log = tmp_path / "seen.txt"
    plugin = tmp_path / "spy_tta.py"
    plugin.write_text(textwrap.dedent(SPY_TTA.format(log=log)))
    path = tiny_suite(
        """
        - name: baseline
        - name: tta
          regularizers: [spy-tta]
        """,
        extra=f"plugins: [{plugin}]",
        epochs=2,
    )
    summary = run_suite(path, out=tmp_path / "out", progress=False, check=False)
    assert (summary.done, summary.failed) == (4, 0)
    lines = log.read_text().splitlines()
    trained = [int(n) for kind, n in (line.split() for line in lines) if kind == "train"]
    viewed = [int(n) for kind, n in (line.split() for line in lines) if kind == "views"]
    assert trained and max(trained) <= 32, "training batches passed through on_batch only"
    # each cell views its held-out fold (100 of the 200-image pool) and the test split (40), and once more each
    # for the warm-up pass that times inference: never a training batch, never the inner validation split
    assert sorted(set(viewed)) == [40, 100] and len(viewed) == 2 * 2 * 2


def test_models_whose_weights_match_but_whose_inputs_differ_in_size_are_not_stacked(write_suite, tmp_path):
    path = write_suite("""
        name: stacked-sizes
        dataset: {name: synthetic-oct, n_train: 48, n_val: 16, n_test: 16, size: 16}
        cv: {folds: 2, seeds: [0], val_fraction: 0.2}
        train: {epochs: 1, batch_size: 16, device: cpu}
        executor: {stack: 4}
        defaults: {model: resnet18}
        variants:
          - name: baseline
          - name: px20
            dataset: {size: 20}
    """)
    summary = run_suite(path, out=tmp_path / "out", progress=False, check=False)
    assert (summary.done, summary.failed) == (4, 0)
    results = collect.load([tmp_path / "out"])
    assert {c.settings["stack_size"] for v in results.variants for c in v.cells} == {2}, (
        "each size's two folds stack together, never a 16 px with a 20 px model"
    )


def test_what_a_user_should_know_about_a_choice_is_said_where_it_is_made(host, tmp_path, write_suite):
    """Pretrained starts get no ImageNet normalisation and hflip is on by default in tta and batch-augment, and
    nothing said so: check, run and the variant's section of the report now do, and normalize silences the first."""
    from octbench.plan.check import variant_notes
    from octbench.suite import PluginRef, Variant

    weights = tmp_path / "own.pt"
    torch.save(host.create("model", "resnet18", {}).build(1, 4, 28).state_dict(), weights)

    def variant(name, model="cnn", params=None, **lists):
        lists = {key: [PluginRef(name=n, params=p) for n, p in lists.get(key, [])]
                 for key in ("preprocessors", "augmenters", "regularizers")}  # fmt: skip
        return Variant(name=name, model=PluginRef(name=model, params=params or {}), **lists)

    start = {"weights": str(weights)}
    notes = variant_notes(
        [
            variant("plain"),
            variant("pretrained", "resnet18", start),
            variant("standardised", "resnet18", start, preprocessors=[("normalize", {})]),
            variant("flips", augmenters=[("batch-augment", {})], regularizers=[("tta", {})]),
            variant(
                "no-flips", augmenters=[("batch-augment", {"hflip": 0.0})], regularizers=[("tta", {"hflip": False})]
            ),
        ],
        host,
    )
    assert set(notes) == {"pretrained", "flips"}
    assert "expect images standardised as they were in pre-training" in notes["pretrained"][0]
    assert [n.split(" mirrors")[0] for n in notes["flips"]] == ["batch-augment", "tta"]
    assert "set hflip: 0 there" in notes["flips"][0] and "set hflip: false there" in notes["flips"][1]

    path = write_suite(SIZES.split("variants:")[0] + "variants:\n  - name: flip\n    augmenters: [batch-augment]\n")
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 0 and "note (flip): batch-augment mirrors images left to right" in result.output
    run_suite(path, out=tmp_path / "out", progress=False, check=False)
    page = html.unescape((tmp_path / "out" / "report.html").read_text())
    assert "<li>batch-augment mirrors images left to right (hflip: 0.5, its default)" in page
