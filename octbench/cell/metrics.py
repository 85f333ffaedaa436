"""Classification metrics of one cell on one split, computed with scikit-learn from the cell's logits (imported when
first computed: the command line reads ``SCALARS`` without loading scikit-learn)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

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


def higher_is_better(host: Any) -> dict[str, bool]:
    """Every metric a trial or a verdict can use, and whether larger is better: the loss (no), octbench's own
    (yes), and each metric plugin as it declares (``Metric.higher_is_better``)."""
    return {
        "loss": False,
        **dict.fromkeys(SCALARS, True),
        **{m.name: m.higher_is_better for m in host.instances("metric")},
    }


def evaluate(y_true: np.ndarray, logits: np.ndarray, num_classes: int, extra: list[Any] = ()) -> dict[str, Any]:
    """Scalar metrics, the confusion matrix and one-vs-rest ROC points per class. ``auc_macro`` is the mean
    one-vs-rest AUC over classes, or the positive class's AUC for a binary task (both classes have the same).
    ``extra``: metric plugins (``octbench.technique.Metric``), each computed from the labels and probabilities."""
    from sklearn import metrics as skm
    from sklearn.exceptions import UndefinedMetricWarning

    from octbench.cell.scores import Scores
    from octbench.stats import auc_classes

    scores = Scores.from_logits(logits)
    y_pred = scores.predicted
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
    roc = roc_points(y_true, scores.log_odds, num_classes)
    aucs = [roc[c]["auc"] for c in auc_classes(num_classes)]
    scalars["auc_macro"] = float(np.mean(aucs)) if None not in aucs else float("nan")
    for metric in extra:
        scalars[metric.name] = metric.compute(y_true, scores.probs)
    return {
        "scalars": {k: float(v) for k, v in scalars.items()},
        "confusion": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "roc": roc,
    }


def roc_points(y_true: np.ndarray, scores: np.ndarray, num_classes: int) -> list[dict[str, Any]]:
    """One-vs-rest ROC curve per class from ranking scores (a class absent from ``y_true`` gets no curve)."""
    from sklearn import metrics as skm

    curves = []
    for cls in range(num_classes):
        positive = y_true == cls
        if positive.all() or not positive.any():
            curves.append({"class": cls, "fpr": [], "tpr": [], "auc": None})
            continue
        fpr, tpr, _ = skm.roc_curve(positive, scores[:, cls])
        curves.append({"class": cls, "fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(skm.auc(fpr, tpr))})
    return curves
