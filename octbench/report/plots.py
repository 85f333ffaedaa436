"""Figures for the report, as base64 PNG data URIs so the page stands alone and opens offline."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import auc as auc_of  # noqa: E402

GRID = np.linspace(0, 1, 101)


def to_data_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
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
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(short)), short, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(short)), short, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title}: {label}", fontsize=9)
    fig.tight_layout()
    return to_data_uri(fig)


def roc(curves: dict[int, list[tuple[list[float], list[float], float]]], class_names: list[str], title: str) -> str:
    """Per class, the vertical average over cells of one-vs-rest ROC curves, plus the macro average."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    macro = []
    for cls, cell_curves in sorted(curves.items()):
        if not cell_curves:
            continue
        tprs = [np.interp(GRID, fpr, tpr) for fpr, tpr, _ in cell_curves]
        mean = np.mean(tprs, axis=0)
        mean[0] = 0.0
        macro.append(mean)
        auc = np.mean([a for _, _, a in cell_curves])
        ax.plot(GRID, mean, lw=1.3, label=f"{class_names[cls][:22]} (AUC {auc:.3f})")
    if macro:
        macro_tpr = np.mean(macro, axis=0)
        ax.plot(GRID, macro_tpr, "k--", lw=1.6, label=f"macro average (AUC {auc_of(GRID, macro_tpr):.3f})")
    ax.plot([0, 1], [0, 1], color="0.8", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
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
