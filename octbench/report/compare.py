"""Data for the views that put all variants side by side: confusion matrices (the test-split ensemble and the CV
pool), ROC curves from each variant's headline predictions, learning curves with the cells still training per
epoch, and per-image predictions. The HTML figures and the JSON/CSV exports draw on the same numbers."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from octbench.report.analysis import Analysis, VariantAnalysis
from octbench.report.collect import Results
from octbench.report.testsplit import headline_predictions


def cv_pool_confusion(a: VariantAnalysis) -> np.ndarray | None:
    """The held-out confusion matrices of every cell summed: each pool image counted once per seed, predicted by
    the model that did not train on it."""
    found = [c.confusion["heldout"] for c in a.variant.cells if "heldout" in c.confusion]
    return np.sum(found, axis=0) if found else None


def confusions(analysis: Analysis) -> dict[str, dict[str, np.ndarray]]:
    """{variant: {"test ensemble": matrix, "CV pool": matrix}}, each where it can be had."""
    found: dict[str, dict[str, np.ndarray]] = {}
    for a in analysis.variants:
        views = {}
        if a.test_split is not None:
            views["test ensemble"] = a.test_split.confusion
        pool = cv_pool_confusion(a)
        if pool is not None:
            views["CV pool"] = pool
        if views:
            found[a.variant.key] = views
    return found


def rocs(analysis: Analysis) -> dict[str, dict[str, Any]]:
    """Per variant, from its headline predictions (test ensemble, else out-of-fold): per class one-vs-rest
    {fpr, tpr, auc}, and for a binary task the operating point (argmax) of the positive class."""
    found: dict[str, dict[str, Any]] = {}
    names = analysis.class_names
    classes = [analysis.positive] if analysis.positive is not None else range(len(names))
    for a in analysis.variants:
        headline = headline_predictions(a)
        if headline is None:
            continue
        y, scores, source = headline
        curves = {}
        for cls in classes:
            target = y == cls
            if target.all() or not target.any():
                continue
            fpr, tpr, _ = roc_curve(target, scores.log_odds[:, cls])
            curves[names[cls]] = {
                "fpr": fpr.tolist(),
                "tpr": tpr.tolist(),
                "auc": float(roc_auc_score(target, scores.log_odds[:, cls])),
            }
        entry: dict[str, Any] = {"source": source, "classes": curves}
        if analysis.positive is not None and curves:
            predicted = scores.predicted == analysis.positive
            positives = y == analysis.positive
            entry["operating_point"] = {
                "fpr": float(np.mean(predicted[~positives])) if (~positives).any() else None,
                "tpr": float(np.mean(predicted[positives])) if positives.any() else None,
            }
        found[a.variant.key] = entry
    return found


def still_training(histories: list[list[dict]]) -> list[int]:
    """How many cells trained each epoch (early stopping ends some before the last)."""
    epochs = max((len(h) for h in histories), default=0)
    return [sum(1 for h in histories if len(h) > e) for e in range(epochs)]


def mean_curve(histories: list[list[dict]], key: str) -> list[float | None]:
    """Per epoch, the mean of ``key`` over the cells still training then."""
    found = []
    for e in range(max((len(h) for h in histories), default=0)):
        values = [h[e][key] for h in histories if len(h) > e and h[e].get(key) is not None]
        found.append(float(np.mean(values)) if values else None)
    return found


def prediction_rows(results: Results) -> list[dict[str, Any]]:
    """One row per image per cell and split: variant, run, seed, fold, split, index (into the CV pool or the test
    split), label, predicted class, each class's probability and one-vs-rest log-odds (from the stored float32
    logits, in float64; AUCs rank by the log-odds, which never saturate as probabilities near 1 do)."""
    names = results.class_names
    rows = []
    for v in results.variants:
        for c in v.cells:
            for split, p in sorted(c.predictions.items()):
                probs = p.scores.probs
                predicted = p.scores.predicted
                odds = p.scores.log_odds
                for i in range(len(p.y_true)):
                    row = {
                        "variant": v.key,
                        "run": v.run,
                        "seed": c.seed,
                        "fold": c.fold,
                        "split": split,
                        "index": int(p.indices[i]),
                        "label": int(p.y_true[i]),
                        "predicted": int(predicted[i]),
                    }
                    row.update({f"p[{name}]": float(probs[i, k]) for k, name in enumerate(names)})
                    row.update({f"log_odds[{name}]": float(odds[i, k]) for k, name in enumerate(names)})
                    rows.append(row)
    return rows
