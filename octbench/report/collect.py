"""Read one or more results folders into plain records for the report: the store is the only source."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from octbench.cell.metrics import SCALARS
from octbench.cell.scores import Scores
from octbench.errors import OctbenchError
from octbench.store import Store


@dataclass
class Prediction:
    """One cell's model on one split: the images' indices (into the CV pool, or the test split), labels, scores."""

    indices: np.ndarray
    y_true: np.ndarray
    scores: Scores


@dataclass
class Cell:
    seed: int
    fold: int
    metrics: dict[str, dict[str, float]]
    confusion: dict[str, np.ndarray]
    roc: dict[str, list[tuple[int, list[float], list[float], float]]]
    curves: list[dict[str, float]]
    timings: dict[str, float]
    counts: dict[str, int]
    predictions: dict[str, Prediction] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    attributions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # split -> indices, maps

    @property
    def test(self) -> Prediction | None:
        return self.predictions.get("test")


@dataclass
class VariantResults:
    key: str
    name: str
    run: str
    role: str
    spec: dict[str, Any]
    cells: list[Cell] = field(default_factory=list)
    failed: list[tuple[int, int, str]] = field(default_factory=list)
    planned: int = 0

    @property
    def pending(self) -> int:
        return self.planned - len(self.cells) - len(self.failed)


@dataclass
class RunInfo:
    label: str
    path: Path
    row: dict[str, Any]
    dataset: dict[str, Any]
    provenance: dict[str, Any]
    folds: int
    seeds: list[int]
    suite: dict[str, Any]
    runs: list[dict[str, Any]]


@dataclass
class Results:
    runs: list[RunInfo]
    variants: list[VariantResults]

    @property
    def dataset(self) -> dict[str, Any]:
        return self.runs[0].dataset

    @property
    def class_names(self) -> list[str]:
        return self.dataset["class_names"]

    @property
    def reference(self) -> VariantResults | None:
        return next((v for v in self.variants if v.role == "baseline"), None)

    @property
    def has_test(self) -> bool:
        return any("test" in c.metrics for v in self.variants for c in v.cells)

    @property
    def metric_names(self) -> list[str]:
        """octbench's metrics, then those metric plugins added to the stored cells."""
        found = {
            name
            for v in self.variants
            for c in v.cells
            for split in ("heldout", "test")
            for name in c.metrics.get(split, {})
        }
        return [*SCALARS, *sorted(found - set(SCALARS))]

    @property
    def reported_values(self) -> list[str]:
        """What the cells' techniques reported about them (``Technique.cell_values``)."""
        return sorted({name for v in self.variants for c in v.cells for name in c.metrics.get("cell", {})})

    def higher_is_better(self, metric: str) -> bool:
        """As the metric's plugin declared it when the run was made (octbench's own are all higher-is-better)."""
        for run in self.runs:
            declared = run.provenance.get("metrics", {}).get(metric)
            if declared is not None:
                return bool(declared)
        return True


def load(directories: list[str | Path]) -> Results:
    """Results of the latest run in each folder; several folders must hold the same dataset (name and MD5)."""
    runs, variants = [], []
    merged = len(directories) > 1
    for directory in directories:
        info, found = _load_one(Path(directory), merged)
        runs.append(info)
        variants += found
    first = runs[0].dataset
    for info in runs[1:]:
        if (info.dataset["name"], info.dataset["md5"]) != (first["name"], first["md5"]):
            raise OctbenchError(
                f"cannot merge {info.path} ({info.dataset['name']}, MD5 {info.dataset['md5']}) with {runs[0].path} "
                f"({first['name']}, MD5 {first['md5']}): reports merge runs of the same dataset only."
            )
    if merged:  # one reference for the merged comparison: the first folder's
        reference_seen = False
        for v in variants:
            if v.role == "baseline":
                v.role = "variant" if reference_seen else "baseline"
                reference_seen = True
    return Results(runs, variants)


def latest_run(directory: Path) -> dict[str, Any]:
    """A folder's latest run: its row, with ``dataset`` and ``suite`` parsed."""
    store = Store(directory / "results.sqlite", create=False)
    try:
        row = dict(store.latest_run())
    finally:
        store.close()
    return {**row, "dataset": json.loads(row["dataset_json"]), "suite": json.loads(row["suite_json"])}


def dataset_identity(directory: Path) -> tuple[str, str]:
    """(name, MD5) of the dataset of a folder's latest run."""
    dataset = latest_run(directory)["dataset"]
    return dataset["name"], dataset["md5"]


def _load_one(directory: Path, merged: bool) -> tuple[RunInfo, list[VariantResults]]:
    store = Store(directory / "results.sqlite", create=False)
    try:
        run = store.latest_run()
        suite = json.loads(run["suite_json"])
        label = directory.name if merged else run["suite_name"]
        info = RunInfo(
            label,
            directory,
            dict(run),
            _dataset(json.loads(run["dataset_json"])),
            json.loads(run["provenance"]),
            suite["cv"]["folds"],
            suite["cv"]["seeds"],
            suite,
            [dict(r) for r in store.runs()],
        )
        plan = store.planned_cells(run["id"])
        done = [r["cell_id"] for r in plan if r["status"] == "done"]
        metrics: dict[int, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        for m in store.metrics(done):
            metrics[m["cell_id"]][m["split"]][m["name"]] = m["value"]
        confusion: dict[int, dict[str, np.ndarray]] = defaultdict(dict)
        for c in store.confusion(done):
            confusion[c["cell_id"]][c["split"]] = np.array(json.loads(c["matrix"]))
        rocs: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for r in store.roc(done):
            if r["auc"] is not None:
                rocs[r["cell_id"]][r["split"]].append(
                    (r["class"], json.loads(r["fpr"]), json.loads(r["tpr"]), r["auc"])
                )
        curves: dict[int, list[dict]] = defaultdict(list)
        for c in store.curves(done):
            curves[c["cell_id"]].append(dict(c))

        by_name: dict[str, VariantResults] = {}
        for row in plan:
            name = row["variant"]
            if name not in by_name:
                by_name[name] = VariantResults(
                    key=f"{label}/{name}" if merged else name,
                    name=name,
                    run=label,
                    role=row["role"],
                    spec=json.loads(row["variant_json"]),
                )
            variant = by_name[name]
            variant.planned += 1
            if row["status"] == "failed":
                variant.failed.append((row["seed"], row["fold"], row["error"]))
            elif row["status"] == "done":
                i = row["cell_id"]
                variant.cells.append(
                    Cell(
                        seed=row["seed"],
                        fold=row["fold"],
                        metrics=dict(metrics[i]),
                        confusion=confusion[i],
                        roc=dict(rocs[i]),
                        curves=curves[i],
                        timings=json.loads(row["timings"]),
                        counts=json.loads(row["counts"]),
                        predictions=_predictions(store, i),
                        settings=json.loads(row["settings"] or "{}"),
                        attributions=store.attributions(i),
                    )
                )
        return info, list(by_name.values())
    finally:
        store.close()


def _dataset(dataset: dict[str, Any]) -> dict[str, Any]:
    """Class names as text, whatever a dataset plugin of an earlier version stored."""
    return {**dataset, "class_names": [str(name) for name in dataset["class_names"]]}


def _predictions(store: Store, cell_id: int) -> dict[str, Prediction]:
    found = {}
    for split in ("heldout", "test"):
        stored = store.predictions(cell_id, split)
        if stored is not None:
            scores = Scores.from_stored(stored["scores"], stored["kind"])
            found[split] = Prediction(stored["indices"], stored["y_true"], scores)
    return found
