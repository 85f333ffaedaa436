"""From a validated suite to checked plugin references and the list of cells to run."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

from octbench.cell import search
from octbench.cell.execute import CellTask
from octbench.cell.metrics import higher_is_better
from octbench.errors import OctbenchError, SuiteError
from octbench.kinds import variant_lists
from octbench.plan import dependencies
from octbench.plugins import PluginHost
from octbench.suite import Distribution, Suite, Techniques, Variant, canonical_json
from octbench.suite.file import yaml_line


def plugin_paths(suite: Suite, suite_file: str | Path | None) -> tuple[str, ...]:
    """Plugin files named in the suite, relative to the suite file's folder."""
    base = Path(suite_file).resolve().parent if suite_file else Path.cwd()
    return tuple(str((base / p).resolve()) if not Path(p).is_absolute() else p for p in suite.plugins)


def check_references(suite: Suite, variants: list[Variant], host: PluginHost, text: str, source: str) -> None:
    """Every plugin name exists and every parameter is valid, or one error pointing at the suite line."""

    def check(kind: str, name: str | None, params: dict, loc: list) -> None:
        if name is None:
            return
        try:
            host.check(kind, name, params)
        except OctbenchError as exc:
            line = yaml_line(text, loc)
            where = f"{source}:{line}" if line else source
            path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
            raise SuiteError(f"{where}: {path}: {exc}") from None

    def check_techniques(block: Techniques, loc: list) -> None:
        if block.dataset is not None:
            check("dataset", suite.dataset.name, {**suite.dataset.params, **block.dataset}, [*loc, "dataset"])
        if block.model is not None:
            check("model", block.model.name, block.model.params, [*loc, "model"])
        for key, kind in variant_lists().items():
            for i, ref in enumerate(getattr(block, key)):
                check(kind, ref.name, ref.params, [*loc, key, i])

    check("dataset", suite.dataset.name, suite.dataset.params, ["dataset"])
    check("executor", suite.executor.name, suite.executor.params, ["executor"])
    check("optimizer", suite.train.optimizer.name, suite.train.optimizer.params, ["train", "optimizer"])
    check_techniques(suite.defaults, ["defaults"])
    if suite.ablation is not None:
        check_techniques(suite.ablation.base, ["ablation", "base"])
        for name, block in suite.ablation.techniques.items():
            check_techniques(block, ["ablation", "techniques", name])
    for i, block in enumerate(suite.variants):
        check_techniques(block, ["variants", i])
    for variant in variants:  # models patched by parameters only are checked once merged
        check("model", variant.model.name, variant.model.params, [variant.where or "variants"])
    check_search(suite, variants, host, text, source)


def check_search(suite: Suite, variants: list[Variant], host: PluginHost, text: str, source: str) -> None:
    """Each variant's search is valid before any cell runs: its metric exists, and the ends of every searched range
    are valid settings of what they set (a trial would otherwise fail at its first draw, in every cell)."""
    from pydantic import ValidationError

    senses = higher_is_better(host)
    for variant in (v for v in variants if v.tune is not None):
        tune, where = variant.tune, _tune_location(suite, variant)

        def at(*key: str, where: list[Any] = where) -> str:
            line = yaml_line(text, [*where, *key])
            return f"{source}:{line}" if line else source

        if tune.metric not in senses:
            choices = ", ".join(sorted(senses))
            raise SuiteError(f"{at('metric')}: tune.metric: '{tune.metric}' is not a metric; choose one of {choices}")
        goal = search.direction(tune, senses)
        if tune.direction is not None and tune.direction != goal:
            sense = "higher" if senses[tune.metric] else "lower"
            raise SuiteError(
                f"{at('direction')}: tune.direction: '{tune.metric}' is {sense}-is-better, so to {tune.direction} it "
                f"would keep each cell's worst trial; leave direction out (the metric decides) or write {goal}"
            )
        for key, distribution in tune.space.items():
            why = unsearchable(key, distribution, suite, variant, host)
            if why:
                raise SuiteError(
                    f"{at('space', key)}: tune.space: {key} cannot change a trial's score in variant '{variant.name}':"
                    f" {why}; searching it would pick a setting at random and cost the trials. Remove it from the space"
                    " (or give this variant its own tune)"
                )
            for value in drawn_kinds(distribution):
                try:
                    tried_suite, tried = search.apply(suite, variant, {key: value})
                    optimizer = tried_suite.train.optimizer
                    host.check("optimizer", optimizer.name, optimizer.params)
                    for kind, ref in [("model", tried.model), *technique_refs(tried)]:
                        host.check(kind, ref.name, ref.params)
                except (ValidationError, OctbenchError) as exc:
                    reason = str(exc).splitlines()[0] if isinstance(exc, OctbenchError) else _first_error(exc)
                    if value not in distribution.bounds:  # the ends passed, a fraction between them did not
                        low, high = distribution.bounds
                        whole = "log_int" if distribution.kind == "log_uniform" else "int"
                        reason += (
                            f" ({distribution.kind} draws fractions: {whole}: [{low:g}, {high:g}] draws whole numbers)"
                        )
                    raise SuiteError(
                        f"{at('space', key)}: tune.space: {key} = {value!r} is not a valid setting for variant "
                        f"'{variant.name}': {reason}"
                    ) from None


def unsearchable(key: str, distribution: Distribution, suite: Suite, variant: Variant, host: PluginHost) -> str:
    """Why the search key cannot change a trial's inner-validation score in ``variant`` (a trial is scored without
    test views, and a regularizer may set an optimizer setting itself), or ''."""
    head, rest = key.split(".", 1)
    if head not in ("train", "model"):
        uses = [(kind, ref) for kind, ref in technique_refs(variant) if ref.name == head]
        viewing = [
            ref for kind, ref in uses if kind == "regularizer" and host.get(kind, ref.name).cls.evaluation_only()
        ]
        if uses and len(viewing) == len(uses):
            return (
                f"'{head}' changes only how the held-out fold and the test split are evaluated (test views), and a "
                "trial is scored on the inner validation split without them"
            )
        return ""
    if head != "train" or not rest.startswith("optimizer."):
        return ""
    from octbench.cell.train import optimizer_options

    setting, values = rest.split(".", 1)[1], drawn_kinds(distribution)
    reached, setters = set(), set()
    for value in values:
        try:
            tried_suite, tried = search.apply(suite, variant, {key: value})
            regularizers = [host.create("regularizer", ref.name, ref.params) for ref in tried.regularizers]
            options, changed_by = optimizer_options(tried_suite.train, regularizers)
        except Exception:  # an invalid value is named by the check of each value; a hook that needs a model: unknown
            return ""
        reached.add(canonical_json(options.get(setting)))
        setters.update([changed_by[setting]] if setting in changed_by else [])
    if len(values) > 1 and len(reached) == 1 and setters:
        who = " and ".join(f"'{name}'" for name in sorted(setters))
        return f"regularizer {who} sets the optimizer's {setting} itself, so no searched value reaches training"
    return ""


def drawn_kinds(distribution: Distribution) -> list[Any]:
    """Values that stand for everything ``distribution`` draws: every choice; a range's two ends, and for a
    continuous range a fraction between them too, so a float range over a whole-number parameter (whose ends, 3.0
    and 10.0, are valid) is found before a trial draws 6.5 in every cell."""
    if distribution.kind == "choice":
        return list(distribution.choice)
    low, high = distribution.bounds
    if distribution.kind in ("int", "log_int"):
        return [low, high]
    inside = math.sqrt(low * high) if distribution.kind == "log_uniform" else (low + high) / 2
    if float(inside).is_integer():
        inside += min((high - low) / 4, 0.25)
    return [low, high, inside]


def technique_refs(variant: Variant) -> list[tuple[str, Any]]:
    return [(kind, ref) for key, kind in variant_lists().items() for ref in getattr(variant, key)]


def _first_error(exc: Any) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"


def _tune_location(suite: Suite, variant: Variant) -> list[Any]:
    explicit = [v.name for v in suite.variants]
    if variant.name in explicit and suite.variants[explicit.index(variant.name)].tune:
        return ["variants", explicit.index(variant.name), "tune"]
    return ["tune"]


# bumped when octbench changes what a cell computes from the same inputs (2: float32 logits, separate random
# streams; 3: a stack's optimizer settings in float64, each member's own epochs and batch-norm count, searches in
# their metric's direction), so results stored by an older octbench are rerun rather than mixed with new ones
ENGINE = 3


def variant_notes(variants: list[Variant] | tuple[Variant, ...], host: PluginHost) -> dict[str, list[str]]:
    """What each variant's techniques say a user should know about them as configured (``Technique.notes``)."""
    found = {}
    for variant in variants:
        refs = [("model", variant.model), *technique_refs(variant)]
        notes = [note for kind, ref in refs for note in host.create(kind, ref.name, ref.params).notes(variant)]
        if notes:
            found[variant.name] = list(dict.fromkeys(notes))
    return found


def print_notes(notes: dict[str, list[str]], echo: Any) -> None:
    """Each note once, with the variants it concerns."""
    by_note: dict[str, list[str]] = {}
    for variant, said in notes.items():
        for note in said:
            by_note.setdefault(note, []).append(variant)
    for note, variants in by_note.items():
        echo(f"note ({', '.join(variants)}): {note}")


def weight_conflicts(variants: list[Variant], host: PluginHost) -> list[str]:
    """A warning per variant with several regularizers that each replace the weights evaluated after training."""
    warnings = []
    for variant in variants:
        choosers = [
            ref.name
            for ref in variant.regularizers
            if host.create("regularizer", ref.name, ref.params).chooses_final_weights
        ]
        if len(choosers) > 1:
            warnings.append(
                f"variant '{variant.name}': {', '.join(choosers)} each choose the weights evaluated after training; "
                f"they run in the listed order, so '{choosers[-1]}' decides (list the one you mean last)"
            )
    return warnings


def config_hash(
    suite: Suite,
    variant: Variant,
    seed: int,
    fold: int,
    data_md5: str,
    quick: bool,
    sources: dict[str, str] | None = None,
    precision: str = "",
) -> str:
    """What a cell's result depends on, the code of the plugins it uses and the files they read included
    (``sources``: ``octbench.plan.dependencies``); a stored cell with another hash is stale and is run again."""
    payload = {
        "engine": ENGINE,
        "sources": sources or {},
        "precision": precision,
        "dataset": suite.dataset.model_dump(mode="json"),
        "data_md5": data_md5,
        "cv": {"folds": suite.cv.folds, "val_fraction": suite.cv.val_fraction, "test_split": suite.cv.test_split},
        "seed": seed,
        "fold": fold,
        "train": suite.train.model_dump(mode="json", exclude={"device"}),
        # an untuned variant hashes as before tuning existed, so stores written earlier stay current
        "variant": variant.model_dump(
            mode="json", exclude={"role", "where", "name", *(() if variant.tune else ("tune",))}
        ),
        "quick": quick,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


def make_tasks(
    suite: Suite,
    variants: list[Variant],
    host: PluginHost,
    *,
    data_md5: str | dict[str, str],
    device: str,
    data_dir: str | None,
    paths: tuple[str, ...],
    precisions: dict[str, str] | None = None,
    journal: str = "",
) -> list[CellTask]:
    """Cells ordered seed, fold, variant: an interrupted run leaves complete, paired folds behind. ``data_md5``: the
    data's checksum, or per variant the checksum of the data its cells load."""
    md5s = data_md5 if isinstance(data_md5, dict) else {variant.name: data_md5 for variant in variants}
    sources = {variant.name: dependencies.of_cell(host, suite, variant).sources(host) for variant in variants}
    return [
        CellTask(
            suite=suite,
            variant=variant,
            seed=seed,
            fold=fold,
            config_hash=config_hash(
                suite,
                variant,
                seed,
                fold,
                md5s[variant.name],
                suite.quick,
                sources[variant.name],
                (precisions or {}).get(variant.name, ""),
            ),
            device=device,
            data_dir=data_dir,
            plugin_paths=paths,
            precision=(precisions or {}).get(variant.name, ""),
            journal=journal if variant.tune is not None else "",
        )
        for seed in suite.cv.seeds
        for fold in range(suite.cv.folds)
        for variant in variants
    ]
