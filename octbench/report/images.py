"""The images behind the numbers: the data at a glance, each variant's errors on the test split, the images it fixed
and broke against the reference (exactly the two off-diagonal cells of McNemar's table), and the near-duplicate
audit (``octbench.report.audit``).

The store holds numbers, not pictures: the images come from the dataset itself, loaded as the run loaded it (its
dataset plugin, parameters and data folder, all in the provenance) and checked against the MD5 the store recorded.
Where that fails (another machine, a moved file) the page says why and shows none; every number stays.
Which images each view shows is chosen from the stored results alone (``Selection``), so the JSON export lists the
same indices the page draws.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from octbench.cell import attribution
from octbench.cell.deadline import TimeLimitExceeded, time_limit
from octbench.data.files import write_atomically
from octbench.dataset import load_data
from octbench.errors import OctbenchError
from octbench.plugins import PluginHost
from octbench.report import audit as near
from octbench.report import pipelines
from octbench.report.analysis import Analysis
from octbench.report.collect import Results, VariantResults
from octbench.report.figures import slug
from octbench.suite import PluginRef
from octbench.technique import Splits

PER_CLASS = 6  # montage images per class and split
ERRORS = 12  # errors shown per variant (the most confident first)
FLIPS = 8  # fixed and broken images shown per variant
CLOSEST = 6  # near-duplicate pairs shown per pairing


@dataclass
class Tile:
    """One small image: which one, its embedded PNG, and what to say under it."""

    split: str
    index: int
    caption: str
    uri: str = ""


@dataclass
class Flips:
    """Against the reference on the test split: every error, and the images only this variant (``fixed``) or only
    the reference (``broke``) got right, all as test-split indices."""

    errors: list[int]
    fixed: list[int]
    broke: list[int]


@dataclass
class Selection:
    montage: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # split -> class name -> indices
    flips: dict[str, Flips] = field(default_factory=dict)  # variant key -> its test-split errors and flips
    pipeline: list[int] = field(default_factory=list)  # training images every variant's pipeline is shown on
    grad_cam: list[int] = field(default_factory=list)  # test images the activation maps explain
    audit: near.Audit | None = None

    def as_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "montage": self.montage,
            "pipeline": {"split": "train", "indices": self.pipeline},
            "grad_cam": {"split": "test", "indices": self.grad_cam},
            "variants": {
                key: {"errors": f.errors[:ERRORS], "errors_total": len(f.errors), "fixed": f.fixed, "broke": f.broke}
                for key, f in self.flips.items()
            },
        }
        if self.audit is not None:
            found["near_duplicates"] = {
                "threshold": self.audit.within_pool.threshold,
                "optimistic": self.audit.optimistic,
                "sentence": self.audit.sentence(),
                **{
                    p.queries: {"rate": p.rate, "closest": p.closest(CLOSEST)}
                    for p in (self.audit.within_pool, self.audit.test_to_pool)
                    if p is not None
                },
            }
        return found

    def summary_sentence(self) -> str:
        """For the summary, only where the audit found something that bears on the comparison."""
        a = self.audit
        if a is None or not (a.optimistic or (a.test_to_pool is not None and a.test_to_pool.rate >= 0.02)):
            return ""
        return a.sentence()[0].upper() + a.sentence()[1:]


def flips(analysis: Analysis) -> dict[str, Flips]:
    """Each variant's test-split errors (the most confident first) and, against the reference's ensemble, the
    images it fixed and broke: the cells McNemar counts."""
    base = next((a.test_split for a in analysis.variants if a.variant is analysis.reference), None)
    found = {}
    for a in analysis.variants:
        t = a.test_split
        if t is None:
            continue
        predicted, y = t.scores.predicted, t.y_true
        wrong = np.flatnonzero(predicted != y)
        confidence = t.scores.probs[wrong, predicted[wrong]]
        errors = wrong[np.argsort(-confidence, kind="stable")].tolist()
        fixed: list[int] = []
        broke: list[int] = []
        if base is not None and a.variant is not analysis.reference:
            mine, theirs = predicted == y, base.scores.predicted == y
            fixed, broke = np.flatnonzero(mine & ~theirs).tolist(), np.flatnonzero(~mine & theirs).tolist()
        found[a.variant.key] = Flips(errors, fixed, broke)
    return found


def montage_rows(labels: np.ndarray, class_names: list[str], seed: int) -> dict[str, list[int]]:
    """A few images of each class, drawn once with the run's first seed (the same for every report of it)."""
    rng = np.random.default_rng(seed)
    chosen = {}
    for c, name in enumerate(class_names):
        rows = np.flatnonzero(labels == c)
        chosen[name] = sorted(rng.choice(rows, size=min(PER_CLASS, len(rows)), replace=False).tolist())
    return chosen


def select(results: Results, analysis: Analysis, data: Splits | None) -> Selection:
    explained = next((c.attributions["test"]["indices"] for v in results.variants for c in v.cells
                      if "test" in c.attributions), np.zeros(0, np.int64))  # fmt: skip
    selection = Selection(flips=flips(analysis), grad_cam=explained.tolist())
    if data is not None:
        seed = results.runs[0].seeds[0] if results.runs[0].seeds else 0
        for split, labels in (("train", data.train_labels), ("val", data.val_labels), ("test", data.test_labels)):
            selection.montage[split] = montage_rows(labels, results.class_names, seed)
        selection.pipeline = pipelines.rows(data.train_labels, len(results.class_names), seed).tolist()
        selection.audit = audit_of(results.runs[0].path, data)
    return selection


def selection(results: Results, analysis: Analysis) -> Selection:
    """Which images the page shows, by split and index, and the near-duplicate audit (the montage and the audit need
    the dataset, loaded as the run loaded it; the errors and flips the store alone)."""
    try:
        data = load_images(results)
    except Exception:
        data = None
    return select(results, analysis, data)


def audit_of(folder: Path, data: Splits) -> near.Audit:
    """The near-duplicate audit of the run's dataset, computed once per results folder and dataset (a large pool
    takes minutes on a CPU) and kept beside the store."""
    cached = folder / f"near-duplicates-{near.VERSION}-{data.md5[:12]}-{near.THRESHOLD:g}.npz"
    if cached.exists():
        try:
            with np.load(cached) as stored:
                return near.Audit.from_arrays(dict(stored), near.THRESHOLD)
        except (OSError, ValueError, KeyError):
            pass  # unreadable: computed again below
    device = "cuda" if torch.cuda.is_available() else "cpu"
    found = near.audit(data.pool[0], data.test_images, device=device)
    buffer = io.BytesIO()
    np.savez(buffer, **found.arrays())
    with contextlib.suppress(OSError):  # a read-only folder: the next report computes it again
        write_atomically(cached, buffer.getvalue())
    return found


def plugin_host(results: Results) -> PluginHost:
    """The plugins the run used: installed ones and the plugin files it named."""
    return PluginHost.load(results.runs[0].provenance.get("plugin_paths", []))


def load_images(results: Results, host: PluginHost | None = None) -> Splits:
    """The run's dataset, as the run loaded it, or an exception that says why not."""
    run = results.runs[0]
    dataset = PluginRef(name=run.dataset["name"], params=run.dataset.get("params") or {})
    data = load_data(dataset, host or plugin_host(results), run.provenance.get("data_dir"))
    if data.md5 != run.dataset["md5"]:
        raise ValueError(
            f"the dataset loaded here has MD5 {data.md5}, the run's had {run.dataset['md5']}: its images may differ"
        )
    return data


def variant_images(results: Results, host: PluginHost, variant: VariantResults, data: Splits) -> Splits:
    """The data ``variant``'s cells loaded: the run's, or its own size of it (checked against the MD5 recorded)."""
    own = variant.spec.get("dataset")
    if not own:
        return data
    run = results.runs[0]
    loaded = load_data(PluginRef(**own), host, run.provenance.get("data_dir"))
    recorded = run.dataset.get("variants", {}).get(variant.name, {}).get("md5")
    if recorded and loaded.md5 != recorded:
        raise ValueError(f"its dataset loaded here has MD5 {loaded.md5}, the run's had {recorded}")
    return loaded


def png_uri(image: np.ndarray) -> str:
    """A small PNG data URI of one (H, W, C) uint8 image at its own size (the page scales it, pixelated)."""
    array = image[..., 0] if image.shape[-1] == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass
class Gallery:
    """What the page draws; ``unavailable`` says why no image is shown."""

    selection: Selection
    unavailable: str | None = None
    montage: list[tuple[str, list[tuple[str, list[Tile]]]]] = field(default_factory=list)  # class -> split -> tiles
    per_class: int = PER_CLASS
    variants: dict[str, dict[str, list[Tile]]] = field(default_factory=dict)
    closest: list[tuple[str, list[tuple[Tile, Tile, float]]]] = field(default_factory=list)
    looks: list[tuple[str, list[Tile], str]] = field(default_factory=list)  # (row, tiles, why none) for the maps
    strips: dict[str, list[tuple[str, list[Tile], str]]] = field(default_factory=dict)  # variant -> stage rows
    finals: dict[str, list[Tile]] = field(default_factory=dict)  # variant -> the images as its model gets them


def gallery(results: Results, analysis: Analysis) -> Gallery:
    """The page's images: the selection drawn as tiles, or the selection alone and why no image can be drawn."""
    try:
        host = plugin_host(results)
        data = load_images(results, host)
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        return Gallery(select(results, analysis, None), unavailable=f"the dataset could not be loaded here: {reason}")
    selection = select(results, analysis, data)
    images = {"train": data.train_images, "val": data.val_images, "test": data.test_images, "pool": data.pool[0]}
    page = Gallery(selection)
    for name in results.class_names:
        page.montage.append(
            (
                name,
                [
                    (split, [_tile(images, split, i) for i in by_class[name]])
                    for split, by_class in selection.montage.items()
                ],
            )
        )
    headlines = {a.variant.key: a.test_split for a in analysis.variants}
    own = _own_test_images(results, host, data)
    for key, f in selection.flips.items():
        caption = _captioner(headlines[key], results.class_names)
        shown = {"errors": f.errors[:ERRORS], "fixed": f.fixed[:FLIPS], "broke": f.broke[:FLIPS]}
        tests = {"test": own[key]}  # at the variant's own size (64 px images for a 64 px variant)
        page.variants[key] = {view: [_tile(tests, "test", i, caption(i)) for i in rows] for view, rows in shown.items()}
    page.looks = _looks(results, host, images["test"], own)
    page.strips, page.finals = _strips(results, host, data, np.array(selection.pipeline, np.int64))
    for pairing in (selection.audit.within_pool, selection.audit.test_to_pool):
        if pairing is not None:
            pairs = [
                (
                    _tile(images, pairing.queries, i, f"{pairing.queries} #{i}"),
                    _tile(images, "pool", j, f"pool #{j}"),
                    d,
                )
                for i, j, d in pairing.closest(CLOSEST)
            ]
            page.closest.append((pairing.name, pairs))
    return page


def _own_test_images(results: Results, host: PluginHost, data: Splits) -> dict[str, np.ndarray]:
    """Each variant's test images as its cells loaded them: the run's, or its own size of them (loaded once per
    size); the run's where its own cannot be loaded here."""
    loaded: dict[str, np.ndarray] = {}
    found = {}
    for v in results.variants:
        own = json.dumps(v.spec.get("dataset"), sort_keys=True)
        if own not in loaded:
            try:
                loaded[own] = variant_images(results, host, v, data).test_images
            except Exception:  # another machine, a moved file: the run's images, at the run's size
                loaded[own] = data.test_images
        found[v.key] = loaded[own]
    return found


def safe_gallery(results: Results, analysis: Analysis) -> Gallery:
    """``gallery``, or none with the reason named among the page's problems: images never cost a report."""
    found = analysis.attempt("images", gallery, results, analysis)
    return found or Gallery(Selection(), unavailable="they could not be drawn (see the note at the top)")


def _strips(
    results: Results, host: PluginHost, data: Splits, shown: np.ndarray
) -> tuple[dict[str, list[tuple[str, list[Tile], str]]], dict[str, list[Tile]]]:
    """Each variant's pipeline on the same training images (``octbench.report.pipelines``) as rows of tiles, and
    the row its model gets (after the last preprocessor, before augmentation)."""
    seed = results.runs[0].seeds[0] if results.runs[0].seeds else 0
    strips, finals = {}, {}
    for v in results.variants:
        if not v.cells:  # its techniques never finished a cell: running them here could hang the report
            strips[v.key] = [("", [], "not drawn: no cell of this variant finished")]
            continue
        try:
            with time_limit(pipelines.SECONDS):
                stages = pipelines.stages(v.spec, host, variant_images(results, host, v, data), shown, seed)
        except (Exception, TimeLimitExceeded) as exc:  # a plugin that fails or hangs here must not cost the page
            strips[v.key] = [("", [], f"could not be drawn here: {type(exc).__name__}: {exc}")]
            continue
        rows = []
        for stage in stages:
            span = stage.span or (None, None)
            tiles = [
                Tile("train", int(i), "", png_uri(pipelines.displayable(image, *span)))
                for i, image in zip(shown, stage.images, strict=False)
            ]
            rows.append((stage.label, tiles, stage.note))
            if tiles and not stage.augmented:
                finals[v.key] = tiles
        strips[v.key] = rows
    return strips, finals


def mean_maps(variant: VariantResults) -> tuple[np.ndarray, np.ndarray] | str:
    """(test indices, activation maps averaged over the variant's fold models), or why there are none."""
    found = [c.attributions["test"] for c in variant.cells if "test" in c.attributions]
    if not found:
        reasons = {str(c.settings.get("attribution", {}).get("unavailable", "")) for c in variant.cells} - {""}
        return "; ".join(sorted(reasons)) or "no cell of this variant stored one (a run by an earlier octbench)"
    indices = found[0]["indices"]
    same = [f["maps"].astype(np.float32) for f in found if np.array_equal(f["indices"], indices)]
    return indices, np.mean(same, axis=0)


def map_layer(variant: VariantResults) -> str:
    """The layer the variant's maps come from, as its cells recorded it ('' for a run by an earlier octbench)."""
    return next((c.settings["attribution"].get("layer", "") for c in variant.cells if "attribution" in c.settings), "")


def _looks(
    results: Results, host: PluginHost, test_images: np.ndarray, own: dict[str, np.ndarray]
) -> list[tuple[str, list[Tile], str]]:
    """The rows of the 'where the models look' grid: the images, then each variant's mean map drawn over the images
    as its model took them (its own size, then its stateless preprocessors: a pad variant's map over the padded
    canvas), with the layer the maps come from."""
    maps = {v.key: mean_maps(v) for v in results.variants}
    shown = next((m[0] for m in maps.values() if not isinstance(m, str)), None)
    if shown is None:
        return []
    names, labels = results.class_names, _test_labels(results)
    rows = [("image", [_tile({"test": test_images}, "test", i, f"#{i} {names[labels[i]]}") for i in shown], "")]
    for v in results.variants:
        found = maps[v.key]
        if isinstance(found, str):
            rows.append((v.key, [], f"not available for this model: {found}"))
            continue
        indices, mean = found
        try:
            with time_limit(pipelines.SECONDS):  # a variant's own plugins: one that hangs must not cost the page
                seen, note = pipelines.model_view(v.spec, host, own[v.key][indices])
        except (Exception, TimeLimitExceeded) as exc:
            seen, note = own[v.key][indices], f"drawn over the images before its preprocessing ({type(exc).__name__})"
        tiles = [
            Tile("test", int(i), f"#{i}", overlay_uri(pipelines.displayable(image), m))
            for i, image, m in zip(indices, seen, mean, strict=True)
        ]
        layer = map_layer(v)
        rows.append((v.key, tiles, "; ".join(filter(None, [f"maps at its layer '{layer}'" if layer else "", note]))))
    return rows


def _test_labels(results: Results) -> np.ndarray:
    return next(c.test.y_true for v in results.variants for c in v.cells if c.test is not None)


def overlay_uri(image: np.ndarray, heat: np.ndarray) -> str:
    """The image in gray with the activation map over it (jet, half transparent), at least 56 px a side."""
    scale = max(1, 56 // image.shape[0])
    gray = image.astype(np.float32).mean(axis=-1) / 255
    gray = np.kron(gray, np.ones((scale, scale), np.float32))
    (upsized,) = attribution.upsampled(heat[None], gray.shape)
    colour = colormaps["jet"](np.clip(upsized, 0, 1))[..., :3]
    blended = 0.55 * gray[..., None] + 0.45 * colour
    return png_uri((blended * 255).round().astype(np.uint8))


def _captioner(headline: Any, names: list[str]) -> Callable[[int], str]:
    """'#index true → predicted probability' for a test image under a variant's ensemble."""
    probs, y = headline.scores.probs, headline.y_true

    def caption(i: int) -> str:
        guess = int(np.argmax(probs[i]))
        return f"#{i} {names[int(y[i])]} → {names[guess]} {probs[i, guess]:.2f}"

    return caption


def _tile(images: dict[str, np.ndarray], split: str, index: int, caption: str = "") -> Tile:
    return Tile(split, index, caption, png_uri(images[split][index]))


def write(page: Gallery, folder: Path) -> list[Path]:
    """Every image the page shows as a PNG file under ``folder/images`` (``--figures``), named by view and index."""
    groups: list[tuple[str, list[Tile]]] = []
    for name, by_split in page.montage:
        groups += [(f"montage/{name}", tiles) for _, tiles in by_split]
    for key, views in page.variants.items():
        groups += [(f"{key}/{view}", tiles) for view, tiles in views.items()]
    for key, stages in page.strips.items():
        groups += [(f"{key}/pipeline/{i}-{label}", tiles) for i, (label, tiles, _) in enumerate(stages)]
    groups += [(f"grad-cam/{row}", tiles) for row, tiles, _ in page.looks]
    for name, pairs in page.closest:
        groups += [(f"near-duplicates/{name}/{k}", [a, b]) for k, (a, b, _) in enumerate(pairs)]
    written = []
    for group, tiles in groups:
        parts = [slug(part) for part in group.split("/")]
        for tile in tiles:
            path = folder.joinpath("images", *parts, f"{tile.split}-{tile.index}.png")
            data = base64.b64decode(tile.uri.split(",", 1)[1])
            try:
                write_atomically(path, data)
            except OSError as exc:
                raise OctbenchError(f"cannot write images to {folder}: {exc.strerror}.") from None
            written.append(path)
    return written
