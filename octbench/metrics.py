"""Classification metrics of one cell on one split, computed with scikit-learn."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

SCALARS = (
    "accuracy",
    "balanced_accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
    "auc_macro",
)


def evaluate(y_true: np.ndarray, probs: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Scalar metrics, the confusion matrix and one-vs-rest ROC points per class."""
    y_pred = probs.argmax(1)
    labels = list(range(num_classes))
    scalars: dict[str, float] = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
    }
    with warnings.catch_warnings():
        # a class never predicted in a tiny fold: 0 precision is the honest value, not a warning per cell
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        scalars["balanced_accuracy"] = skm.balanced_accuracy_score(y_true, y_pred)
        for average in ("macro", "weighted"):
            p, r, f, _ = skm.precision_recall_fscore_support(
                y_true, y_pred, labels=labels, average=average, zero_division=0
            )
            scalars[f"precision_{average}"], scalars[f"recall_{average}"], scalars[f"f1_{average}"] = p, r, f
    roc = roc_points(y_true, probs, num_classes)
    aucs = [c["auc"] for c in roc if c["auc"] is not None]
    scalars["auc_macro"] = float(np.mean(aucs)) if len(aucs) == num_classes else float("nan")
    return {
        "scalars": {k: float(v) for k, v in scalars.items()},
        "confusion": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "roc": roc,
    }


def roc_points(y_true: np.ndarray, probs: np.ndarray, num_classes: int) -> list[dict[str, Any]]:
    """One-vs-rest ROC curve per class (a class absent from ``y_true`` gets no curve)."""
    curves = []
    for cls in range(num_classes):
        positive = y_true == cls
        if positive.all() or not positive.any():
            curves.append({"class": cls, "fpr": [], "tpr": [], "auc": None})
            continue
        fpr, tpr, _ = skm.roc_curve(positive, probs[:, cls])
        curves.append({"class": cls, "fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(skm.auc(fpr, tpr))})
    return curves
