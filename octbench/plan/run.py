"""A run's plan: from a suite (a file or a shipped suite's name) and overrides to everything checked that ``run``,
``check``, the conformance kit, an executor and the benchmarks need.

``plan_run`` reads the suite once, with ``--quick`` and ``--device`` applied as overrides like any ``--set`` (so
they are validated, hashed and recorded with the rest of the suite), loads the plugins and checks every reference,
checks the executor, loads and checks the data, and checks that every seed's pool can be folded. Anything wrong is
one ``OctbenchError`` before anything is written. What costs a measurement (each variant's precision, the
execution plan) is decided the first time a run asks for it; ``octbench check`` never does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from octbench.cell import machine, search
from octbench.cell.device import resolve
from octbench.cell.execute import CellTask
from octbench.cell.stack_model import unstackable
from octbench.dataset import check_same_samples, load_data
from octbench.plan import dependencies, folds
from octbench.plan.check import check_references, make_tasks, plugin_paths, variant_notes
from octbench.plugins import PluginHost
from octbench.store.lock import ensure_free
from octbench.suite import PluginRef, Suite, Variant, dataset_of, resolve_variants
from octbench.suite.file import find_suite, load_suite
from octbench.technique import Splits


@dataclass(frozen=True)
class RunPlan:
    suite: Suite
    text: str  # the suite file as written (overrides are in ``suite``)
    source: str  # the suite file
    plugin_paths: tuple[str, ...]
    host: PluginHost
    variants: tuple[Variant, ...]
    executor: Any  # the suite's executor plugin, checked to run here
    device: torch.device
    data: Splits
    data_dir: str | None
    out: Path  # the results folder a run writes
    variant_data: dict[str, Splits]  # per variant, the data its cells load (the suite's, or its own size of it)

    def datasets(self) -> list[PluginRef]:
        """Every dataset the run's cells load: the suite's, then each other one a variant names, once."""
        refs = [self.suite.dataset]
        for variant in self.variants:
            ref = dataset_of(self.suite, variant)
            if ref not in refs:
                refs.append(ref)
        return refs

    @property
    def quick(self) -> bool:
        return self.suite.quick

    def pool_rows(self, seed: int) -> np.ndarray:
        """The rows of the pool that ``seed``'s cells fold: all of them, or a quick run's subset."""
        return folds.pool_rows(self.suite, self.data.pool[1], seed)

    @cached_property
    def precisions(self) -> dict[str, str]:
        """bf16 or fp32 per variant: the suite's choice, else one measured trial per model plugin
        (``octbench.cell.machine.precision``), of the training step cells run."""
        chosen: dict[str, str] = {}
        by_model: dict[tuple[str, tuple[int, int, int]], str] = {}
        for variant in self.variants:
            key, image = variant.model.name, self._image(variant)
            if (key, image) not in by_model:
                model = self._model(variant)
                classes = self.data.num_classes
                by_model[key, image] = (
                    ""
                    if model is None
                    else machine.precision(self.suite.train, key, model, image, classes, self.device)
                )
            chosen[variant.name] = by_model[key, image]
        return chosen

    @cached_property
    def tasks(self) -> list[CellTask]:
        """Every cell, ordered seed, fold, variant (``octbench.plan.check.make_tasks``)."""
        return make_tasks(
            self.suite,
            list(self.variants),
            self.host,
            data_md5={name: data.md5 for name, data in self.variant_data.items()},
            device=str(self.device),
            data_dir=self.data_dir,
            paths=self.plugin_paths,
            precisions=self.precisions,
            journal=search.journal_path(self.out),
        )

    @cached_property
    def execution(self) -> machine.Execution:
        """How many cells stack, how many stacks run at once, threads per cell, and why (``machine.execution``)."""
        return machine.execution(self.suite, self.executor, self.device, len(self.tasks), measure=self._measure_stack)

    @cached_property
    def notes(self) -> dict[str, list[str]]:
        """Per variant, what its techniques say a user should know about them as configured (``plan.variant_notes``)."""
        return variant_notes(self.variants, self.host)

    @cached_property
    def depends_on(self) -> dependencies.Dependencies:
        """Every plugin and file a cell of this run depends on (``octbench.plan.dependencies``): what provenance
        records."""
        return dependencies.of_run(self.host, self.suite, self.variants)

    def pools(self) -> dict[str, dict[str, Any]]:
        """Per seed, how many pool rows its cells fold and a digest of which: what provenance records."""
        found = {}
        for seed in self.suite.cv.seeds:
            rows = self.pool_rows(seed)
            found[str(seed)] = {"rows": len(rows), "sha1": hashlib.sha1(rows.astype(np.int64).tobytes()).hexdigest()}
        return found

    def dataset_record(self) -> dict[str, Any]:
        """What the store records of the dataset: its name, parameters, classes, shape, checksum and sizes."""
        data = self.data
        labels = {"train": data.train_labels, "val": data.val_labels, "test": data.test_labels}
        return {
            "name": self.suite.dataset.name,
            "params": self.suite.dataset.params,
            # every parameter, defaults included, so a variant's own size reads "size=28→64"
            "resolved_params": self.host.create(
                "dataset", self.suite.dataset.name, self.suite.dataset.params
            ).params.model_dump(mode="json"),
            "class_names": data.class_names,
            "channels": data.channels,
            "image_size": data.image_size,
            "md5": data.md5,
            "source": data.source,
            "sizes": {split: len(y) for split, y in labels.items()},
            "class_counts": {split: np.bincount(y, minlength=data.num_classes).tolist() for split, y in labels.items()},
            "positive_class": data.meta.get("positive_class"),
            **({"variants": self._variant_datasets()} if len(self.datasets()) > 1 else {}),
        }

    def _variant_datasets(self) -> dict[str, dict[str, Any]]:
        """Per variant on a dataset of its own (another size): its parameters, image size and checksum."""
        found = {}
        for variant in self.variants:
            if variant.dataset is not None:
                data = self.variant_data[variant.name]
                found[variant.name] = {"params": variant.dataset.params, "image_size": data.image_size,
                                       "channels": data.channels, "md5": data.md5}  # fmt: skip
        return found

    def _image(self, variant: Variant) -> tuple[int, int, int]:
        data = self.variant_data[variant.name]
        return (data.channels, data.image_size, data.image_size)

    def _model(self, variant: Variant) -> torch.nn.Module | None:
        """A fresh model of ``variant`` for a trial; None when it cannot be built (its cells fail with the reason
        when they run)."""
        try:
            spec = self.host.create("model", variant.model.name, variant.model.params)
            channels, _, size = self._image(variant)
            return spec.build(channels, self.data.num_classes, size)
        except Exception:
            return None

    def _measure_stack(self, most: int) -> tuple[int, str]:
        """(stack size, why) on a GPU, from a trial of the first variant's model (``machine.stack_size``), at most
        ``most``."""
        variant = self.variants[0]
        model = self._model(variant)
        if model is None:
            return most, f"the model '{variant.model.name}' could not be built for a trial"
        why = unstackable(model)
        if why is not None:
            return 1, f"the model '{variant.model.name}' cannot be stacked: {why}"
        config = self.suite.train.model_copy(
            update={"precision": self.precisions.get(variant.name) or self.suite.train.precision}
        )
        image = self._image(variant)
        found = machine.stack_size(config, variant.model.name, model, image, self.data.num_classes, self.device)
        speeds = ", ".join(f"{size}: {speed:,.0f}" for size, speed in found["images_per_s"].items())
        size = min(int(found["choice"]), most)
        return size, f"fastest in a trial of '{variant.model.name}' (images/s by stack size: {speeds})"


def plan_run(
    suite: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    quick: bool = False,
    device: str | None = None,
    data_dir: str | None = None,
    out: str | Path | None = None,
    claim: bool = False,
    progress: bool = False,
) -> RunPlan:
    """The checked plan of ``suite`` (see the module docstring). ``quick`` and ``device`` are overrides
    (``quick=true``, ``train.device=...``). ``out``: the results folder (default ``reports/<suite>``, or
    ``reports/<suite>-quick``: a quick run never shares a folder with full results); with ``claim``, a folder
    another run holds is refused before the data is loaded."""
    source = find_suite(suite)
    overrides = [*overrides, *(["quick=true"] if quick else []), *([f"train.device={device}"] if device else [])]
    loaded, text = load_suite(source, overrides)
    paths = plugin_paths(loaded, source)
    host = PluginHost.load(paths)
    variants = resolve_variants(loaded)
    check_references(loaded, variants, host, text, str(source))
    executor = host.create("executor", loaded.executor.name, loaded.executor.params)
    executor.check()
    out_dir = Path(out) if out else Path("reports") / (f"{loaded.name}-quick" if loaded.quick else loaded.name)
    if claim:
        ensure_free(out_dir)  # a busy folder is refused before the slow work below
    torch_device = resolve(loaded.train.device)
    data = load_data(loaded, host, data_dir, progress=progress)
    variant_data = _variant_data(loaded, variants, host, data_dir, data, progress)
    for seed in loaded.cv.seeds:
        folds.check_foldable(data.pool[1][folds.pool_rows(loaded, data.pool[1], seed)], loaded.cv.folds,
                             data.class_names)  # fmt: skip
    return RunPlan(
        suite=loaded,
        text=text,
        source=str(source),
        plugin_paths=paths,
        host=host,
        variants=tuple(variants),
        executor=executor,
        device=torch_device,
        data=data,
        data_dir=data_dir,
        out=out_dir,
        variant_data=variant_data,
    )


def _variant_data(
    suite: Suite, variants: list[Variant], host: PluginHost, data_dir: str | None, data: Splits, progress: bool
) -> dict[str, Splits]:
    """Per variant, its data: the suite's, or its own dataset parameters' (another size), loaded once per
    parameters (one copy in memory for every variant that names them) and checked to hold the same samples."""
    found = {}
    for variant in variants:
        if variant.dataset is None:
            found[variant.name] = data
            continue
        shown = ", ".join(f"{k}={v}" for k, v in variant.dataset.params.items())
        own = load_data(variant.dataset, host, data_dir, progress=progress)
        check_same_samples(own, data, f"variant '{variant.name}' (dataset {variant.dataset.name} with {shown})")
        found[variant.name] = own
    return found
