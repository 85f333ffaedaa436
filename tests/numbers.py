"""A results folder written from numbers: the cells of a real plan, each given made-up predictions in place of a
trained model, committed and published as a run would. The store is the one a run writes (its plan, provenance,
dataset record, per-cell metrics computed by ``octbench.cell.metrics.evaluate``, curves, timings, settings, predictions
and activation maps), so report, export and image tests read it as they read a trained run, without training.

A variant's ``skill`` sets how far its logits lean to the true class (0: chance); each cell's noise is seeded by
its seed, fold and variant, so the store is the same every time.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from octbench.cell import attribution
from octbench.cell.execute import CellResult, fold_rows
from octbench.cell.metrics import evaluate
from octbench.plan.run import RunPlan, plan_run
from octbench.report.publish import publish
from octbench.runner import record_run
from octbench.store import Store

EPOCHS = 2


def write_results(suite: Path, out: Path, skills: dict[str, float] | None = None, *, report: bool = True) -> Path:
    """``out`` holding ``suite``'s every cell as made-up results (and, with ``report``, its report.html)."""
    plan = plan_run(suite, out=out)  # the cells' configuration hashes are a real run's: a run resumes this store
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out / "results.sqlite")
    try:
        run_id = record_run(store, plan)
        for task in plan.tasks:
            store.commit(run_id, made_up(plan, task, (skills or {}).get(task.variant.name, 1.5)))
        store.finish_run(run_id, "done")
    finally:
        store.close()
    if report:
        publish([out])
    return out


def made_up(plan: RunPlan, task, skill: float) -> CellResult:
    """One cell's result with logits ``skill`` times the true class's one-hot vector plus unit Gaussian noise."""
    data = plan.variant_data[task.variant.name]
    classes = data.num_classes
    rng = np.random.default_rng([task.seed, task.fold, zlib.crc32(task.variant.name.encode())])
    rows = fold_rows(task, data.pool[1])
    held = rows.pool[rows.held]
    result = CellResult(*task.key, task.config_hash, device="cpu (made-up results)")
    splits = {"heldout": (held, data.pool[1][held])}
    if plan.suite.cv.test_split:
        splits["test"] = (np.arange(len(data.test_labels)), data.test_labels)
    for split, (indices, y) in splits.items():
        logits = (skill * np.eye(classes)[y] + rng.normal(size=(len(y), classes))).astype(np.float32)
        result.evaluations[split] = evaluate(y, logits, classes, plan.host.instances("metric"))
        result.predictions[split] = {"indices": indices, "y_true": y, "logits": logits}
    result.history = [
        {
            "epoch": e + 1,
            "train_loss": 1.2 / (e + 1),
            "train_acc": 0.5 + 0.1 * e,
            "val_loss": 1.3 / (e + 1),
            "val_acc": 0.45 + 0.1 * e,
            "lr": 0.001,
            "seconds": 0.5,
        }
        for e in range(EPOCHS)
    ]
    inner, test = len(rows.inner), len(data.test_labels)
    result.counts = {"train": inner, "inner_val": len(rows.val), "heldout": len(held), "test": test,
                     "train_after_resampling": inner}  # fmt: skip
    result.timings = {
        "load": 0.01,
        "preprocess": 0.02,
        "to_device": 0.001,
        "train": 1.0,
        "validate": 0.05,
        "evaluate": 0.1,
        "train_images_per_s": 1000.0 + 10 * task.fold,
        "infer_images_per_s": 8000.0,
        "train_warm": 1.0,
        "preprocess_cached": 0.0,
    }
    explained = attribution.rows(data.test_labels, classes)
    maps = rng.random((len(explained), 7, 7))
    maps = (maps / maps.max(axis=(1, 2), keepdims=True)).astype(np.float16)
    result.attributions["test"] = {"indices": explained, "maps": maps}
    result.settings = {
        "precision": task.precision or "fp32",
        "channels_last": True,
        "stack_size": 1,
        "not_stacked_because": "",
        "per_member": [],
        "parameters": 12_345,
        "threads": 1,
        "deterministic": False,
        "attribution": {"method": attribution.METHOD, "layer": "made-up"},
    }
    return result
