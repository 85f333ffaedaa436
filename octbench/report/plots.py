"""Figures for the report. Each function returns a matplotlib figure; ``to_data_uri`` embeds it in the page as a
base64 PNG (so the page stands alone and opens offline) and ``save`` writes it for a paper (SVG, PDF, 300-dpi PNG).

Colours follow Okabe and Ito's colour-blind-safe palette, and lines that share axes also differ in dash and marker,
so no figure depends on telling red from green."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from cycler import cycler
from matplotlib.figure import Figure
from matplotlib.layout_engine import PlaceHolderLayoutEngine
from sklearn.metrics import auc as auc_of
from sklearn.metrics import roc_curve

# names come from suites and plugins: "lr $\\notacommand$" is a variant name, not mathtext to parse
matplotlib.rcParams["text.parse_math"] = False
# Okabe & Ito (2008), "Color universal design": distinguishable with every common colour-vision deficiency
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
DASHES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
matplotlib.rcParams["axes.prop_cycle"] = cycler(color=OKABE_ITO)
matplotlib.rcParams["svg.hashsalt"] = "octbench"  # the same figure gives the same SVG (its ids are hashed)
BETTER, WORSE, NEUTRAL = "#0072B2", "#D55E00", "0.55"  # blue / vermilion, never red against green

GRID = np.linspace(0, 1, 101)


def _style(i: int) -> dict[str, str]:
    """The i-th variant's colour, dash and marker: 8 colours × 4 dashes before a combination repeats."""
    return {"color": OKABE_ITO[i % 8], "ls": DASHES[(i // 8) % 4], "marker": MARKERS[i % 8]}


def to_data_uri(fig: Figure) -> str:
    """PNG of ``fig`` for the page (110 dpi); figures laid out by hand (``fig.crop``) get their margins trimmed."""
    buffer = io.BytesIO()
    _drop_placeholder(fig)
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight" if getattr(fig, "crop", False) else None)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _drop_placeholder(fig: Figure) -> None:
    """Drops what ``tight_layout`` leaves behind: with it, every savefig lays every text out once more."""
    if isinstance(fig.get_layout_engine(), PlaceHolderLayoutEngine):
        fig.set_layout_engine(None)


def save(fig: Figure, stem: Path) -> list[Path]:
    """``stem``.svg, .pdf and .png (300 dpi), without creation dates so the same results give the same files.

    The tight box is found once and used for all three (``bbox_inches="tight"`` would lay the figure out per file)."""
    _drop_placeholder(fig)
    box = fig.get_tightbbox().padded(matplotlib.rcParams["savefig.pad_inches"])
    paths = []
    for suffix, options in (
        (".svg", {"metadata": {"Date": None}}),
        (".pdf", {"metadata": {"CreationDate": None}}),
        (".png", {"dpi": 300}),
    ):
        path = stem.with_suffix(suffix)
        fig.savefig(path, format=suffix[1:], bbox_inches=box, **options)
        paths.append(path)
    return paths


def confusion(matrix: np.ndarray, class_names: list[str], title: str) -> Figure:
    """Counts and row-normalised rates side by side."""
    short = [n if len(n) <= 14 else n[:12] + "…" for n in class_names]
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = 2.2 + 0.55 * len(class_names)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, values, label, fmt in ((axes[0], matrix, "counts", "{:.0f}"), (axes[1], rates, "row-normalised", "{:.2f}")):
        ax.imshow(rates, cmap="cividis", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(values):
            ax.text(
                j,
                i,
                fmt.format(v),
                ha="center",
                va="center",
                fontsize=8,
                color="black" if rates[i, j] > 0.55 else "white",
            )
        ax.set_xticks(range(len(short)), short, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(short)), short, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(label, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def roc(y_true: np.ndarray, odds: np.ndarray, class_names: list[str], title: str, positive: int | None) -> Figure:
    """ROC curves from one classifier's scores: the positive class's alone for a binary task (the other class's is
    its mirror, with the same AUC), else one-vs-rest per class and their vertical (macro) average."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    classes = [positive] if positive is not None else range(len(class_names))
    drawn = []
    for cls in classes:
        target = y_true == cls
        if target.all() or not target.any():
            continue
        fpr, tpr, _ = roc_curve(target, odds[:, cls])
        drawn.append(np.interp(GRID, fpr, tpr))
        label = f"positive: {class_names[cls][:22]}" if positive is not None else class_names[cls][:22]
        ax.plot(fpr, tpr, lw=1.3, label=f"{label} (AUC {auc_of(fpr, tpr):.3f})")
    if positive is None and drawn:
        macro_tpr = np.mean(drawn, axis=0)
        macro_tpr[0] = 0.0
        ax.plot(GRID, macro_tpr, "k--", lw=1.6, label="macro average of the curves")
    ax.plot([0, 1], [0, 1], color="0.8", lw=0.8)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def reliability(curves: dict[str, tuple[list[float], list[float], list[int]]], what: str) -> Figure:
    """Reliability diagram: mean predicted probability per bin against the observed frequency, one line per
    variant; the diagonal is perfect calibration, marker area shows how many images a bin holds."""
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="perfectly calibrated")
    for i, (name, (confidence, observed, counts)) in enumerate(curves.items()):
        total = max(sum(counts), 1)
        style = _style(i)
        ax.plot(confidence, observed, lw=1.1, color=style["color"], ls=style["ls"], label=name[:30])
        sizes = [8 + 200 * c / total for c in counts]
        ax.scatter(confidence, observed, s=sizes, alpha=0.6, color=style["color"], marker=style["marker"])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"predicted {what}")
    ax.set_ylabel("observed frequency")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def training_curves(per_cell: list[list[dict]], title: str) -> Figure:
    """Mean over cells with a min-max band: losses on the left, accuracies on the right."""
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
    for ax, keys in ((axes[0], ("train_loss", "val_loss")), (axes[1], ("train_acc", "val_acc"))):
        for key in keys:
            epochs = max(len(h) for h in per_cell)
            rows = [[h[e][key] for h in per_cell if e < len(h)] for e in range(epochs)]
            x = np.arange(1, epochs + 1)
            mean = np.array([np.mean(r) for r in rows])
            ax.plot(x, mean, marker="o", ms=3, label=key.replace("_", " "))
            ax.fill_between(x, [min(r) for r in rows], [max(r) for r in rows], alpha=0.2)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{title}: loss", fontsize=9)
    axes[1].set_title(f"{title}: accuracy (inner validation)", fontsize=9)
    fig.tight_layout()
    return fig


def search_curves(per_variant: dict[str, list[list[float]]], metric: str) -> Figure:
    """Best inner-validation score so far against the trial number: per variant, the mean over its tuned cells."""
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for i, (name, curves) in enumerate(per_variant.items()):
        length = max(len(c) for c in curves)
        mean = [np.nanmean([c[t] for c in curves if t < len(c)]) for t in range(length)]
        ax.plot(np.arange(1, length + 1), mean, label=name, ms=3, **_style(i))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"best inner-validation {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _height(rows: int) -> float:
    return 1.2 + 0.32 * rows


def fold_spread(values: dict[str, list[float]], metric: str) -> Figure:
    """Every cell's value of ``metric`` per variant (dots), with the mean (bar)."""
    names = list(values)
    fig, ax = plt.subplots(figsize=(7.5, _height(len(names))))
    for row, name in enumerate(names):
        v = values[name]
        if v:
            ax.scatter(v, [row] * len(v), s=14, alpha=0.7, color=OKABE_ITO[0])
            ax.plot([np.mean(v)] * 2, [row - 0.3, row + 0.3], color="black", lw=1.5)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric.replace('_', ' ')} on held-out folds (one dot per cell, bar = mean)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def throughput(
    names: list[str],
    train: list[tuple[float, float]],
    infer: list[tuple[float, float]],
    stages: dict[str, list[float]],
) -> Figure:
    """Training and inference images/s per variant (mean, with the SD over cells as an error bar), and mean
    seconds per stage; legends sit below the axes, never over a bar."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, _height(len(names)) + 0.9), sharey=True)
    y = np.arange(len(names))
    for offset, values, label, colour in (
        (-0.2, train, "train", OKABE_ITO[0]),
        (0.2, infer, "inference", OKABE_ITO[1]),
    ):
        means = [m for m, _ in values]
        spread = [s for _, s in values]
        left.barh(y + offset, means, 0.4, xerr=spread, label=label, color=colour, error_kw={"lw": 0.8, "capsize": 2})
    left.set_yticks(y, names, fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("images/s (warm, device synchronised; bar: SD over cells)")
    left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    start = np.zeros(len(names))
    for i, (stage, seconds) in enumerate(stages.items()):
        right.barh(y, seconds, 0.6, left=start, label=stage.replace("_", " "), color=OKABE_ITO[i % 8])
        start += np.asarray(seconds)
    right.set_xlabel("seconds per cell, by stage")
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=4, frameon=False)
    fig.tight_layout()
    return fig


def effects(rows: list[tuple[str, float, float, float, str]], metric: str, reference: str) -> Figure:
    """Each variant's mean paired difference from the reference with its corrected 95% interval."""
    fig, ax = plt.subplots(figsize=(7.5, _height(len(rows))))
    colours = {"better": BETTER, "worse": WORSE, "": NEUTRAL}
    shapes = {"better": "^", "worse": "v", "": "o"}
    for row, (_name, mean, low, high, mark) in enumerate(rows):
        ax.errorbar(mean, row, xerr=[[mean - low], [high - mean]], fmt=shapes[mark], color=colours[mark], capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"difference in {metric.replace('_', ' ')} from '{reference}' (corrected 95% interval)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def critical_difference(names: list[str], ranks: list[float], cd: float) -> Figure:
    """Demšar's critical-difference diagram: average ranks (1 = best); variants joined by a thick bar do not
    differ significantly (Nemenyi, 5%)."""
    order = list(np.argsort(ranks))
    k = len(names)
    fig, ax = plt.subplots(figsize=(8.5, 1.4 + 0.3 * k))
    ax.set_xlim(0.6, k + 3.2)
    ax.set_ylim(-(0.5 * k + 1.2), 1.8)
    ax.plot([1, k], [0, 0], color="black", lw=1)
    for r in range(1, k + 1):
        ax.plot([r, r], [0, 0.15], color="black", lw=1)
        ax.text(r, 0.35, str(r), ha="center", fontsize=8)
    ax.plot([1, 1 + cd], [1.2, 1.2], color=WORSE, lw=2)
    ax.text(1 + cd / 2, 1.38, f"critical difference {cd:.2f}", ha="center", fontsize=8, color=WORSE)
    sorted_ranks = [ranks[i] for i in order]
    bars = []  # maximal groups of variants whose ranks lie within the critical difference
    for i in range(k):
        j = max(x for x in range(i, k) if sorted_ranks[x] - sorted_ranks[i] <= cd)
        if j > i and not any(a <= i and j <= b for a, b in bars):
            bars.append((i, j))
    for n, (i, j) in enumerate(bars):
        y = -0.18 - 0.14 * n
        ax.plot([sorted_ranks[i] - 0.03, sorted_ranks[j] + 0.03], [y, y], color="black", lw=3, solid_capstyle="round")
    top = -0.3 - 0.14 * len(bars)
    for line, index in enumerate(order):
        y = top - 0.5 * line
        ax.plot([ranks[index], ranks[index], k + 0.15], [0, y, y], color="0.35", lw=0.8)
        ax.text(k + 0.25, y, f"{names[index]} ({ranks[index]:.2f})", va="center", ha="left", fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    fig.crop = True
    return fig


def _panels(count: int, width: float = 3.3, height: float = 3.1, columns: int = 3):
    """A grid of ``count`` small multiples, the spare axes hidden."""
    cols = min(columns, count)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis("off")
    return fig, list(axes.flat[:count])


def roc_overlay(curves: dict[str, dict], class_names: list[str], positive: int | None) -> Figure:
    """Every variant's ROC on one set of axes: the positive class's (with the argmax operating point) for a binary
    task; for more classes one panel per class and one of the macro average of each variant's curves."""
    variants = list(curves)
    if positive is not None:
        fig, axes = plt.subplots(figsize=(5.6, 4.8))
        panels = [(axes, [class_names[positive]], f"positive class: {class_names[positive]}")]
    else:
        fig, flat = _panels(len(class_names) + 1)
        panels = [(flat[0], class_names, "macro average of the one-vs-rest curves")]
        panels += [(ax, [name], f"{name} against the rest") for ax, name in zip(flat[1:], class_names, strict=True)]
    for ax, names, title in panels:
        for i, key in enumerate(variants):
            drawn = [curves[key]["classes"][n] for n in names if n in curves[key]["classes"]]
            if not drawn:
                continue
            if len(drawn) == 1:
                fpr, tpr, area = drawn[0]["fpr"], drawn[0]["tpr"], drawn[0]["auc"]
            else:
                fpr = GRID
                tpr = np.mean([np.interp(GRID, d["fpr"], d["tpr"]) for d in drawn], axis=0)
                tpr[0], area = 0.0, float(np.mean([d["auc"] for d in drawn]))
            style = _style(i)
            ax.plot(fpr, tpr, lw=1.3, color=style["color"], ls=style["ls"], label=f"{key[:26]} ({area:.3f})")
            point = curves[key].get("operating_point")
            if positive is not None and point and point["fpr"] is not None and point["tpr"] is not None:
                ax.plot(point["fpr"], point["tpr"], marker=style["marker"], color=style["color"], ms=7, ls="none")
        ax.plot([0, 1], [0, 1], color="0.8", lw=0.8)
        ax.set_xlabel("false positive rate (1 - specificity)", fontsize=8)
        ax.set_ylabel("true positive rate (sensitivity)", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6.5, loc="lower right", title="variant (AUC)", title_fontsize=6.5)
    fig.tight_layout()
    return fig


def confusion_grid(matrices: dict[str, np.ndarray], class_names: list[str], title: str) -> Figure:
    """One small row-normalised confusion matrix per variant (counts printed), in a grid."""
    short = [n if len(n) <= 10 else n[:9] + "…" for n in class_names]
    size = 1.6 + 0.45 * len(class_names)
    fig, axes = _panels(len(matrices), width=size + 0.6, height=size + 0.5, columns=4)
    for ax, (key, matrix) in zip(axes, matrices.items(), strict=True):
        rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
        ax.imshow(rates, cmap="cividis", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, f"{v:.0f}\n{rates[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                    color="black" if rates[i, j] > 0.55 else "white")  # fmt: skip
        ax.set_xticks(range(len(short)), short, rotation=35, ha="right", fontsize=7)
        ax.set_yticks(range(len(short)), short, fontsize=7)
        ax.set_title(key[:30], fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def curves_overlay(per_variant: dict[str, list[list[dict]]]) -> Figure:
    """Validation loss and accuracy per epoch for every variant (mean over the cells still training), and below
    them how many cells were still training each epoch (early stopping ends some sooner)."""
    fig, axes = plt.subplots(2, 2, figsize=(9.6, 5.4), height_ratios=[3, 1.3], sharex=True, squeeze=False)
    (loss, accuracy), (count, spare) = axes
    spare.axis("off")
    for i, (key, histories) in enumerate(per_variant.items()):
        style = _style(i)
        epochs = max(len(h) for h in histories)
        x = np.arange(1, epochs + 1)
        for ax, metric in ((loss, "val_loss"), (accuracy, "val_acc")):
            values = [np.mean([h[e][metric] for h in histories if len(h) > e]) for e in range(epochs)]
            ax.plot(x, values, color=style["color"], ls=style["ls"], marker=style["marker"], ms=3, lw=1.2,
                    label=key[:28])  # fmt: skip
        counts = [sum(1 for h in histories if len(h) > e) for e in range(epochs)]
        count.step(x, counts, where="mid", color=style["color"], ls=style["ls"], lw=1.2)
    loss.set_title("inner-validation loss (mean over cells still training)", fontsize=9)
    accuracy.set_title("inner-validation accuracy", fontsize=9)
    count.set_title("cells still training", fontsize=9)
    count.set_xlabel("epoch")
    count.yaxis.get_major_locator().set_params(integer=True)
    for ax in (loss, accuracy, count):
        ax.grid(alpha=0.3)
    handles, labels = loss.get_legend_handles_labels()
    spare.legend(handles, labels, fontsize=7, loc="center", ncol=2 if len(labels) > 6 else 1, frameon=False)
    fig.tight_layout()
    return fig
