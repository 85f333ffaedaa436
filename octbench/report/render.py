"""Build the report's context from the store and render ``report.html`` with Jinja2 (autoescaped)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from octbench.data.files import write_atomically
from octbench.metrics import SCALARS
from octbench.report import plots
from octbench.store import Store

LEADERBOARD = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced acc."),
    ("f1_macro", "Macro F1"),
    ("auc_macro", "Macro AUC"),
)
STAGES = ("load", "preprocess", "resample", "to_device", "train", "evaluate")


def summarize(values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(finite)), "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0,
            "n": len(finite)}


def build_context(store: Store) -> dict[str, Any]:
    run = store.latest_run()
    dataset = json.loads(run["dataset_json"])
    class_names = dataset["class_names"]
    plan = store.planned_cells(run["id"])
    done_ids = [r["cell_id"] for r in plan if r["status"] == "done"]

    metric_rows: dict[int, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for m in store.metrics(done_ids):
        metric_rows[m["cell_id"]][m["split"]][m["name"]] = m["value"]
    curves: dict[int, list[dict]] = defaultdict(list)
    for c in store.curves(done_ids):
        curves[c["cell_id"]].append(dict(c))
    confusion: dict[tuple[int, str], np.ndarray] = {
        (c["cell_id"], c["split"]): np.array(json.loads(c["matrix"])) for c in store.confusion(done_ids)
    }
    rocs: dict[tuple[int, str], list] = defaultdict(list)
    for r in store.roc(done_ids):
        if r["auc"] is not None:
            rocs[(r["cell_id"], r["split"])].append((r["class"], json.loads(r["fpr"]), json.loads(r["tpr"]), r["auc"]))

    has_test = any("test" in metric_rows[i] for i in done_ids)
    display_split = "test" if has_test else "heldout"
    order: list[str] = []
    by_variant: dict[str, list] = defaultdict(list)
    for row in plan:
        if row["variant"] not in by_variant:
            order.append(row["variant"])
        by_variant[row["variant"]].append(row)

    variants = []
    for name in order:
        rows = by_variant[name]
        ids = [r["cell_id"] for r in rows if r["status"] == "done"]
        timings = [json.loads(r["timings"]) for r in rows if r["status"] == "done"]
        entry: dict[str, Any] = {
            "name": name,
            "anchor": f"v{order.index(name)}",
            "role": rows[0]["role"],
            "spec": json.loads(rows[0]["variant_json"]),
            "planned": len(rows),
            "done": len(ids),
            "failed": [(r["seed"], r["fold"], r["error"]) for r in rows if r["status"] == "failed"],
            "pending": sum(r["status"] is None for r in rows),
            "heldout": {k: summarize([metric_rows[i]["heldout"].get(k) for i in ids]) for k in SCALARS},
            "test": {k: summarize([metric_rows[i]["test"].get(k) for i in ids]) for k in SCALARS} if has_test else {},
            "timing": {k: summarize([t.get(k, 0.0) for t in timings]) for k in (*STAGES, "train_images_per_s",
                                                                                 "infer_images_per_s")},
            "figures": {},
        }
        if ids:
            matrix = sum(confusion[(i, display_split)] for i in ids if (i, display_split) in confusion)
            entry["figures"]["confusion"] = plots.confusion(
                np.asarray(matrix), class_names, f"{display_split} split, {len(ids)} cells summed"
            )
            per_class: dict[int, list] = defaultdict(list)
            for i in ids:
                for cls, fpr, tpr, auc in rocs[(i, display_split)]:
                    per_class[cls].append((fpr, tpr, auc))
            entry["figures"]["roc"] = plots.roc(per_class, class_names, f"ROC, {display_split} split")
            histories = [curves[i] for i in ids if curves[i]]
            if histories:
                entry["figures"]["curves"] = plots.training_curves(histories, name)
        variants.append(entry)

    provenance = json.loads(run["provenance"])
    devices = sorted({r["device"] for r in plan if r["device"]})
    return {
        "run": dict(run),
        "suite_name": run["suite_name"],
        "quick": bool(run["quick"]),
        "dataset": dataset,
        "class_names": class_names,
        "variants": variants,
        "leaderboard_columns": LEADERBOARD,
        "display_split": display_split,
        "has_test": has_test,
        "provenance": provenance,
        "devices": devices,
        "stages": STAGES,
        "totals": {
            "planned": len(plan),
            "done": len(done_ids),
            "failed": sum(r["status"] == "failed" for r in plan),
            "pending": sum(r["status"] is None for r in plan),
        },
        "runs": [dict(r) for r in store.runs()],
    }


def render(context: dict[str, Any]) -> str:
    env = Environment(
        loader=PackageLoader("octbench.report", "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pm"] = lambda s, digits=3: "–" if s["mean"] is None else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
    env.filters["num"] = lambda v, digits=0: "–" if v is None else f"{v:,.{digits}f}"
    return env.get_template("report.html.j2").render(**context)


def write_report(out_dir: str | Path) -> Path:
    """Render ``<out>/report.html`` from ``<out>/results.sqlite``; the file is replaced atomically."""
    out_dir = Path(out_dir)
    store = Store(out_dir / "results.sqlite", create=False)
    try:
        html = render(build_context(store))
    finally:
        store.close()
    path = out_dir / "report.html"
    write_atomically(path, html.encode("utf-8"))
    return path
