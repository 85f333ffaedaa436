"""What sets a variant apart from the reference, read from the resolved variants the store keeps (after defaults,
``--set`` and ablation expansion), and what its cells recorded about the model (parameter count, memory)."""

from __future__ import annotations

from typing import Any

from octbench.report.collect import VariantResults

BOOKKEEPING = ("name", "role", "where")


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _named(ref: dict[str, Any]) -> str:
    params = ref.get("params") or {}
    return f"{ref['name']}({_params(params)})" if params else ref["name"]


def _techniques(key: str, mine: list[dict], theirs: list[dict]) -> list[str]:
    found = []
    names, reference_names = [t["name"] for t in mine], [t["name"] for t in theirs]
    found += [f"+{_named(t)}" for t in mine if t["name"] not in reference_names]
    found += [f"−{t['name']}" for t in theirs if t["name"] not in names]
    by_name = {t["name"]: t for t in theirs}
    for t in mine:
        before = by_name.get(t["name"])
        if before is not None and (before.get("params") or {}) != (t.get("params") or {}):
            old, new = before.get("params") or {}, t.get("params") or {}
            diff = [
                f"{k}={old.get(k, '–')}→{new.get(k, '–')}"
                for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k)
            ]
            found.append(f"{t['name']}: {', '.join(diff)}")
    common = [n for n in names if n in reference_names]
    if not found and common != [n for n in reference_names if n in names]:
        found.append(f"{key} reordered: {', '.join(names)}")
    return found


def changes(spec: dict[str, Any], reference: dict[str, Any], dataset: dict[str, Any] | None = None) -> list[str]:
    """Short descriptions of how ``spec`` differs from ``reference`` ('+clahe(clip_limit=2.0)', '−ema',
    'model cnn→resnet18', 'early-stopping: patience=5→8', 'dataset size=28→64'); empty when they are the same.
    ``dataset``: the parameters of the suite's dataset, which a variant without its own uses."""
    found = _dataset_change(spec, reference, dataset or {})
    model, base = spec.get("model") or {}, reference.get("model") or {}
    if model.get("name") != base.get("name"):
        found.append(f"model {base.get('name')}→{_named(model)}")
    elif (model.get("params") or {}) != (base.get("params") or {}):
        found += [f"model {x}" for x in _techniques("model", [model], [base])]
    for key in sorted(set(spec) | set(reference)):
        if key in (*BOOKKEEPING, "model", "dataset"):
            continue
        mine, theirs = spec.get(key), reference.get(key)
        if mine == theirs:
            continue
        if key == "tune":
            found += _tune_change(mine, theirs, added={c[1:].split("(")[0] for c in found if c.startswith("+")})
            continue
        if all(isinstance(x, list) for x in (mine or [], theirs or [])):
            found += _techniques(key, mine or [], theirs or [])
        else:
            found.append(f"{key}: {theirs}→{mine}")
    return found


def _tune_change(mine: dict[str, Any] | None, theirs: dict[str, Any] | None, added: set[str]) -> list[str]:
    """'tuned (20 trials)', 'untuned', 'tune trials 20→40', 'search +model.hidden': how the search differs, leaving
    out keys of a technique the variant adds (searching it goes with using it)."""
    if not mine or not theirs:
        return ["untuned"] if not mine else [f"tuned ({mine.get('trials')} trials)"]
    found = []
    if mine.get("trials") != theirs.get("trials"):
        found.append(f"tune trials {theirs.get('trials')}→{mine.get('trials')}")
    space, before = mine.get("space") or {}, theirs.get("space") or {}
    found += [f"search +{k}" for k in space if k not in before and k.split(".")[0] not in added]
    found += [f"search −{k}" for k in before if k not in space]
    found += [f"search {k} changed" for k in space if k in before and space[k] != before[k]]
    for setting in ("metric", "sampler", "direction"):
        if mine.get(setting) != theirs.get(setting):
            found.append(f"tune {setting} {theirs.get(setting)}→{mine.get(setting)}")
    return found


def changes_from(spec: dict[str, Any], reference: VariantResults | None, dataset: dict[str, Any]) -> list[str]:
    """``changes`` against the reference variant (none: nothing to say), given the run's dataset record (its
    ``resolved_params`` hold every parameter, defaults included; stores written before them have ``params``)."""
    if reference is None:
        return []
    return changes(spec, reference.spec, dataset.get("resolved_params") or dataset.get("params"))


def _dataset_change(spec: dict[str, Any], reference: dict[str, Any], suite: dict[str, Any]) -> list[str]:
    """'dataset size=28→64' when the variant loads the dataset with other parameters than the reference does."""
    mine = {**suite, **((spec.get("dataset") or {}).get("params") or {})}
    theirs = {**suite, **((reference.get("dataset") or {}).get("params") or {})}
    diff = [f"{k}={theirs.get(k, '–')}→{mine.get(k, '–')}" for k in sorted(set(mine) | set(theirs))
            if mine.get(k) != theirs.get(k)]  # fmt: skip
    return [f"dataset {', '.join(diff)}"] if diff else []


def parameters(variant: VariantResults) -> int | None:
    """The model's trainable parameter count, as its cells recorded it (runs before this was recorded: None)."""
    counts = {c.settings.get("parameters") for c in variant.cells if c.settings.get("parameters")}
    return max(counts) if counts else None
