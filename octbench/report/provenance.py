"""What ran, for the report's provenance section: the resolved configuration, how the cells ran (precision,
determinism, parallel cells, threads), versions down to the GPU driver, model size and peak memory, and warnings
a reader must see (an unknown or modified source tree)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import yaml

from octbench.report.collect import RunInfo, VariantResults


def resolved_yaml(run: RunInfo, variants: list[VariantResults]) -> str:
    """The suite after defaults, ``--set`` and ablation expansion, as YAML: what the cells actually ran."""
    suite = dict(run.suite)
    suite["variants"] = [
        {k: val for k, val in v.spec.items() if k not in ("where",)} for v in variants if v.run == run.label
    ]
    suite.pop("ablation", None)
    return yaml.safe_dump(json.loads(json.dumps(suite, default=str)), sort_keys=False, allow_unicode=True)


def _spread(values: list[float], unit: str, digits: int = 0) -> str | None:
    if not values:
        return None
    if max(values) - min(values) < 10 ** (-digits):
        return f"{values[0]:,.{digits}f} {unit}"
    return f"{np.median(values):,.{digits}f} {unit} (median; {min(values):,.{digits}f} to {max(values):,.{digits}f})"


def cells_ran(variants: list[VariantResults]) -> dict[str, Any]:
    """What the cells themselves recorded: precision, determinism, threads, stack size, parameters, memory."""
    settings = [c.settings for v in variants for c in v.cells if c.settings]
    if not settings:
        return {}

    def counted(key: str, show: Any = str) -> str:
        counts: dict[str, int] = {}
        for s in settings:
            if key in s:
                label = show(s[key])
                counts[label] = counts.get(label, 0) + 1
        if not counts:
            return "not recorded (a run made before this version)"
        return "; ".join(f"{label} ({n} cell{'s' if n != 1 else ''})" for label, n in sorted(counts.items()))

    return {
        "precision": counted("precision"),
        "deterministic algorithms": counted("deterministic", lambda d: "on" if d else "off"),
        "threads per cell": counted("threads"),
        "cells trained as one stack": counted("stack_size"),
        "model parameters": "; ".join(
            f"{v.name}: {p:,}"
            for v in variants
            if (p := max((c.settings.get("parameters") or 0 for c in v.cells), default=0))
        )
        or "not recorded (a run made before this version)",
        "peak host memory per process": _spread([s["peak_host_mib"] for s in settings if "peak_host_mib" in s], "MiB")
        or "not recorded",
        "peak device memory per stack": _spread(
            [s["peak_device_mib"] for s in settings if "peak_device_mib" in s], "MiB"
        ),
    }


def warnings(provenance: dict[str, Any]) -> list[str]:
    """What a reader must not miss: results not tied to a known, unmodified source tree."""
    found = []
    commit = str(provenance.get("octbench_commit", "unknown"))
    if commit == "unknown":
        found.append(
            "octbench's source commit is unknown (not run from a git checkout): these results cannot be tied to "
            "a version of the code beyond its package version."
        )
    elif commit.endswith("+dirty"):
        found.append(
            f"octbench ran from a modified checkout ({commit}): the code that made these results is not in any commit."
        )
    if provenance.get("broken_plugins"):
        found.append(f"plugins that failed to import during the run: {'; '.join(provenance['broken_plugins'])}.")
    return found


def sharing(provenance: dict[str, Any]) -> str | None:
    """How many cells shared the device at once: throughput measured that way is not one cell's alone."""
    executor = provenance.get("executor") or {}
    parallel, stack = executor.get("parallel"), executor.get("stack")
    if not parallel and not stack:
        return None
    parallel, stack = int(parallel or 1), int(stack or 1)
    at_once = parallel * stack
    if at_once <= 1:
        return "one cell at a time: each cell had the device to itself."
    return (
        f"up to {at_once} cells at once ({parallel} process{'es' if parallel != 1 else ''} × stacks of up to "
        f"{stack}) shared the device, so one cell's images/s is lower, and noisier, than it would be alone."
    )


def provenance_of(run: RunInfo, variants: list[VariantResults]) -> dict[str, Any]:
    p = run.provenance
    return {
        "run": run,
        "resolved": resolved_yaml(run, variants),
        "cells": cells_ran([v for v in variants if v.run == run.label]),
        "warnings": warnings(p),
        "sharing": sharing(p),
        "accelerator": p.get("accelerator") or {},
    }
