"""Figures for the report, as base64 PNG data URIs so the page stands alone and opens offline."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import auc as auc_of
from sklearn.metrics import roc_curve

# names come from suites and plugins: "lr $\\notacommand$" is a variant name, not mathtext to parse
matplotlib.rcParams["text.parse_math"] = False

GRID = np.linspace(0, 1, 101)


def to_data_uri(fig, crop: bool = False) -> str:
    """PNG of ``fig``; ``crop`` trims the margins (an extra draw: only for figures laid out by hand)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight" if crop else None)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def confusion(matrix: np.ndarray, class_names: list[str], title: str) -> str:
    """Counts and row-normalised rates side by side."""
    short = [n if len(n) <= 14 else n[:12] + "…" for n in class_names]
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = 2.2 + 0.55 * len(class_names)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, values, label, fmt in ((axes[0], matrix, "counts", "{:.0f}"), (axes[1], rates, "row-normalised", "{:.2f}")):
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(values):
            ax.text(
                j,
                i,
                fmt.format(v),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if rates[i, j] > 0.6 else "black",
            )
        ax.set_xticks(range(len(short)), short, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(short)), short, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(label, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return to_data_uri(fig)


def roc(y_true: np.ndarray, odds: np.ndarray, class_names: list[str], title: str, positive: int | None) -> str:
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
    return to_data_uri(fig)


def reliability(curves: dict[str, tuple[list[float], list[float], list[int]]], what: str) -> str:
    """Reliability diagram: mean predicted probability per bin against the observed frequency, one line per
    variant; the diagonal is perfect calibration, marker area shows how many images a bin holds."""
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="perfectly calibrated")
    for name, (confidence, observed, counts) in curves.items():
        total = max(sum(counts), 1)
        ax.plot(confidence, observed, lw=1.1, label=name[:30])
        ax.scatter(confidence, observed, s=[8 + 200 * c / total for c in counts], alpha=0.6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"predicted {what}")
    ax.set_ylabel("observed frequency")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return to_data_uri(fig)


def training_curves(per_cell: list[list[dict]], title: str) -> str:
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
    return to_data_uri(fig)


def _height(rows: int) -> float:
    return 1.2 + 0.32 * rows


def fold_spread(values: dict[str, list[float]], metric: str) -> str:
    """Every cell's value of ``metric`` per variant (dots), with the mean (bar)."""
    names = list(values)
    fig, ax = plt.subplots(figsize=(7.5, _height(len(names))))
    for row, name in enumerate(names):
        v = values[name]
        if v:
            ax.scatter(v, [row] * len(v), s=14, alpha=0.7, color="tab:blue")
            ax.plot([np.mean(v)] * 2, [row - 0.3, row + 0.3], color="black", lw=1.5)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric.replace('_', ' ')} on held-out folds (one dot per cell, bar = mean)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return to_data_uri(fig)


def throughput(names: list[str], train: list[float], infer: list[float], stages: dict[str, list[float]]) -> str:
    """Training and inference images/s, and mean seconds per stage, per variant."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, _height(len(names))), sharey=True)
    y = np.arange(len(names))
    left.barh(y - 0.2, train, 0.4, label="train")
    left.barh(y + 0.2, infer, 0.4, label="inference")
    left.set_yticks(y, names, fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("images/s (warm, device synchronised)")
    left.legend(fontsize=7)
    start = np.zeros(len(names))
    for stage, seconds in stages.items():
        right.barh(y, seconds, 0.6, left=start, label=stage.replace("_", " "))
        start += np.asarray(seconds)
    right.set_xlabel("seconds per cell, by stage")
    right.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return to_data_uri(fig)


def effects(rows: list[tuple[str, float, float, float, str]], metric: str, reference: str) -> str:
    """Each variant's mean paired difference from the reference with its corrected 95% interval."""
    fig, ax = plt.subplots(figsize=(7.5, _height(len(rows))))
    colours = {"better": "tab:green", "worse": "tab:red", "": "tab:gray"}
    for row, (_name, mean, low, high, mark) in enumerate(rows):
        ax.errorbar(mean, row, xerr=[[mean - low], [high - mean]], fmt="o", color=colours[mark], capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"difference in {metric.replace('_', ' ')} from '{reference}' (corrected 95% interval)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return to_data_uri(fig)


def critical_difference(names: list[str], ranks: list[float], cd: float) -> str:
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
    ax.plot([1, 1 + cd], [1.2, 1.2], color="tab:red", lw=2)
    ax.text(1 + cd / 2, 1.38, f"critical difference {cd:.2f}", ha="center", fontsize=8, color="tab:red")
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
    return to_data_uri(fig, crop=True)
