"""Every figure of the report, drawn once: embedded in the page, and with ``--figures DIR`` also written as files.

A figure that cannot be drawn from what is stored is left out and the page says which and why
(``Analysis.problems``); one odd cell never keeps a report from rendering.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from sklearn.metrics import confusion_matrix

from octbench.data.files import cache_dir, write_atomically
from octbench.errors import OctbenchError
from octbench.report import compare, plots
from octbench.report.analysis import Analysis
from octbench.report.collect import Results
from octbench.report.testsplit import headline_predictions

STAGES = ("load", "preprocess", "resample", "to_device", "train", "validate", "evaluate")


def slug(text: str) -> str:
    """A file name from any text (variant names are user input): letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:80] or "figure"


@dataclass
class Drawer:
    """Draws figures; each becomes a data URI for the page, and files under ``folder`` when one is given."""

    analysis: Analysis
    folder: Path | None = None
    written: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.folder is not None:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OctbenchError(f"cannot create the figures folder {self.folder}: {exc.strerror}.") from None

    def draw(self, name: str, draw: Any, *args: Any, remember_it: bool = True) -> str | None:
        """``draw(*args)``'s figure as a data URI (and files, with a folder). Drawn once per inputs: the same function
        with the same inputs gives the PNG remembered under the cache folder (``remember_it=False`` for a figure
        that arrives drawn, whose inputs are not known)."""
        key = figure_key(draw, args) if self.folder is None and remember_it else None
        if key is not None and (uri := remembered(key)) is not None:
            return uri  # drawn from the same numbers before: a report rendered again redraws nothing
        fig = self.analysis.attempt(name, draw, *args)
        if fig is None:
            return None
        if self.folder is not None:
            stem = self.folder / slug(name)
            n = 2
            while stem.with_suffix(".svg") in self.written:
                stem, n = self.folder / f"{slug(name)}-{n}", n + 1
            try:
                self.written += plots.save(fig, stem)
            except OSError as exc:
                raise OctbenchError(f"cannot write figures to {self.folder}: {exc.strerror}.") from None
        uri = plots.to_data_uri(fig)
        if key is not None:
            remember(key, uri)
        return uri


def figure_key(draw: Any, args: tuple[Any, ...]) -> str | None:
    """A figure's key: its drawing function, its inputs, the drawing code and matplotlib's version (None where an
    input cannot be pickled: that figure is drawn every time)."""
    try:
        inputs = pickle.dumps(args, protocol=5)
    except Exception:
        return None
    parts = [draw.__module__, draw.__qualname__, matplotlib.__version__, _drawing_code(), inputs]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
    return digest.hexdigest()[:32]


@functools.lru_cache(maxsize=1)
def _drawing_code() -> str:
    """A digest of the drawing code, read once per process."""
    return hashlib.sha256(Path(plots.__file__).read_bytes()).hexdigest()


def _figure_file(key: str) -> Path:
    return cache_dir() / "figures" / key[:2] / f"{key}.txt"


def remembered(key: str) -> str | None:
    """The figure drawn before from the same inputs, or None; reading it marks it used (``forget_old_figures``)."""
    path = _figure_file(key)
    try:
        uri = path.read_text()
        os.utime(path)
        return uri
    except (OSError, UnicodeDecodeError):
        return None


def remember(key: str, uri: str) -> None:
    """Keep a drawn figure (a PNG data URI) under the cache folder; a full or read-only disk only costs speed."""
    with contextlib.suppress(OSError):
        write_atomically(_figure_file(key), uri.encode())


FIGURES_KEPT = 256 * 2**20  # bytes of remembered figures: a few hundred reports' worth


def forget_old_figures(limit: int = FIGURES_KEPT) -> int:
    """Delete the least recently written remembered figures until they take at most ``limit`` bytes; how many."""
    try:
        files = [(f.stat(), f) for f in (cache_dir() / "figures").glob("*/*.txt")]
    except OSError:
        return 0
    total = sum(stat.st_size for stat, _ in files)
    gone = 0
    for stat, file in sorted(files, key=lambda pair: pair[0].st_mtime_ns):
        if total <= limit:
            break
        with contextlib.suppress(OSError):
            file.unlink()
            total, gone = total - stat.st_size, gone + 1
    return gone


def per_variant(results: Results, drawer: Drawer) -> dict[str, dict[str, str]]:
    """Each variant's own confusion matrix, ROC and training curves (its folded detail section)."""
    names = results.class_names
    analysis = drawer.analysis
    found: dict[str, dict[str, str]] = {}
    for a in analysis.variants:
        v = a.variant
        if not v.cells:
            continue
        figures = {}
        headline = headline_predictions(a)
        if headline is not None:
            y, scores, label = headline
            matrix = confusion_matrix(y, scores.predicted, labels=list(range(len(names))))
            figures["confusion"] = drawer.draw(f"confusion matrix of {v.key}", plots.confusion, matrix, names, label)
            if len(np.unique(y)) > 1:
                figures["roc"] = drawer.draw(
                    f"ROC of {v.key}", plots.roc, y, scores.log_odds, names, f"ROC, {label}", analysis.positive
                )
        histories = [c.curves for c in v.cells if c.curves]
        if histories:
            figures["curves"] = drawer.draw(f"training curves of {v.key}", plots.training_curves, histories, v.key)
        found[v.key] = {k: f for k, f in figures.items() if f}
    return found


def _done(analysis: Analysis) -> list[Any]:
    return [a for a in analysis.variants if a.variant.cells]


def _kept(found: dict[str, str | None]) -> dict[str, str]:
    return {k: f for k, f in found.items() if f}


def side_by_side(results: Results, drawer: Drawer) -> dict[str, str]:
    """The views that put every variant side by side: ROC, confusion matrices and learning curves."""
    analysis = drawer.analysis
    done = _done(analysis)
    if not done:
        return {}
    found: dict[str, str | None] = {}
    curves = compare.rocs(analysis)
    if len(curves) >= 1:
        found["roc"] = drawer.draw(
            "ROC of every variant", plots.roc_overlay, curves, results.class_names, analysis.positive
        )
    matrices = compare.confusions(analysis)
    for view, label in (("test ensemble", "test-split ensembles"), ("CV pool", "CV pool")):
        chosen = {k: m[view] for k, m in matrices.items() if view in m}
        if chosen:
            title = (
                "Official test split: each variant's ensemble of fold models (counts; rates per true class)"
                if view == "test ensemble"
                else "CV pool: every held-out prediction of every seed (counts; rates per true class)"
            )
            found[f"confusion {view}"] = drawer.draw(
                f"confusion matrices, {label}", plots.confusion_grid, chosen, results.class_names, title
            )
    histories = {a.variant.key: [c.curves for c in a.variant.cells if c.curves] for a in done}
    histories = {k: h for k, h in histories.items() if h}
    if histories:
        found["curves"] = drawer.draw("learning curves of every variant", plots.curves_overlay, histories)
    return _kept(found)


def verdicts(drawer: Drawer) -> dict[str, str]:
    """Each variant's paired difference from the reference, and the fold-to-fold spread."""
    analysis = drawer.analysis
    done = _done(analysis)
    if not done:
        return {}
    found: dict[str, str | None] = {}
    rows = [
        (a.variant.key, c.test.mean_difference, c.test.low, c.test.high, c.mark)
        for a in done
        if (c := a.comparisons.get(analysis.metric))
    ]
    if rows and analysis.reference is not None:
        found["effects"] = drawer.draw("effects", plots.effects, rows, analysis.metric, analysis.reference.key)
    found["spread"] = drawer.draw(
        "fold spread",
        plots.fold_spread,
        {
            a.variant.key: [
                c.metrics["heldout"][analysis.metric]
                for c in a.variant.cells
                if c.metrics.get("heldout", {}).get(analysis.metric) is not None
            ]
            for a in done
        },
        analysis.metric,
    )
    return _kept(found)


def calibration(drawer: Drawer) -> dict[str, str]:
    """The reliability diagram of every variant's headline predictions."""
    calibrated = [a for a in _done(drawer.analysis) if a.clinical is not None]
    if not calibrated:
        return {}
    reliability = {
        a.variant.key: (
            a.clinical.reliability.confidence,
            a.clinical.reliability.observed,
            a.clinical.reliability.counts,
        )
        for a in calibrated
    }
    what = calibrated[0].clinical.reliability.what
    return _kept({"reliability": drawer.draw("reliability diagram", plots.reliability, reliability, what)})


def timing(drawer: Drawer) -> dict[str, str]:
    """Throughput and seconds per stage, per variant."""
    done = _done(drawer.analysis)
    if not done:
        return {}
    found = drawer.draw(
        "throughput",
        plots.throughput,
        [a.variant.key for a in done],
        [(a.timing["train_images_per_s"].mean or 0, a.timing["train_images_per_s"].std or 0) for a in done],
        [(a.timing["infer_images_per_s"].mean or 0, a.timing["infer_images_per_s"].std or 0) for a in done],
        {s: [a.timing[s].mean or 0 for a in done] for s in STAGES},
    )
    return _kept({"throughput": found})
