"""How each variant was tuned (``octbench.cell.search``): the budget, the setting chosen in each fold, how fast the
search converged, which parameters mattered, and choices at the edge of their range.

Everything here is read from the cells' stored search records (``settings['search']``) and the variants' planned
search (``spec['tune']``); the verdicts elsewhere in the report are computed on the tuned cells as on any other.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from octbench.cell.search import distributions, import_optuna
from octbench.report import plots
from octbench.report.collect import Results, VariantResults
from octbench.suite import Distribution

EDGE = 0.05  # a choice within 5% of its range's width (log-width for log ranges) of an end is "at the edge"


@dataclass
class VariantSearch:
    key: str
    trials: int
    metric: str
    direction: str
    sampler: str
    space: dict[str, Distribution]
    chosen: list[tuple[int, int, dict[str, Any], float]]  # seed, fold, setting, inner-validation score
    seconds: list[float]  # per tuned cell
    curves: list[list[float]]  # best-so-far per tuned cell, over its finished trials
    failed_trials: int
    records: list[dict[str, Any]]  # each tuned cell's stored search
    edges: list[str] = field(default_factory=list)

    @property
    def parameters(self) -> int:
        """How many parameters the variant searched (its planned space, else what its cells chose)."""
        return len(self.space) or len({k for _, _, setting, _ in self.chosen for k in setting})

    @property
    def per_parameter(self) -> float:
        return self.trials / max(self.parameters, 1)


def searches(results: Results) -> list[VariantSearch]:
    """One entry per variant with at least one tuned cell, in the report's order."""
    return [found for v in results.variants if (found := _variant_search(v)) is not None]


def _variant_search(variant: VariantResults) -> VariantSearch | None:
    records = [(c.seed, c.fold, c.settings["search"]) for c in variant.cells if "search" in c.settings]
    if not records:
        return None
    first = records[0][2]
    space = {k: Distribution.model_validate(v) for k, v in (variant.spec.get("tune") or {}).get("space", {}).items()}
    found = VariantSearch(
        key=variant.key,
        trials=first["trials"],
        metric=first["metric"],
        direction=first["direction"],
        sampler=first["sampler"],
        space=space,
        chosen=[(seed, fold, r["chosen"], r["score"]) for seed, fold, r in records],
        seconds=[r["seconds"] for _, _, r in records],
        curves=[_best_so_far(r) for _, _, r in records],
        failed_trials=sum(1 for _, _, r in records for t in r["history"] if t["state"] != "complete"),
        records=[r for _, _, r in records],
    )
    found.edges = _edges(found)
    return found


def _best_so_far(record: dict[str, Any]) -> list[float]:
    better = max if record["direction"] == "maximize" else min
    curve, best = [], None
    for trial in sorted(record["history"], key=lambda t: t["number"]):
        if trial["value"] is not None:
            best = trial["value"] if best is None else better(best, trial["value"])
        curve.append(math.nan if best is None else best)
    return curve


def _position(value: float, kind: str, low: float, high: float) -> float:
    if kind.startswith("log"):
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (value - low) / (high - low)


def _edges(found: VariantSearch) -> list[str]:
    """A sentence per searched range whose chosen values sit at one of its ends in at least half of the folds:
    the optimum may lie outside the range, so the comparison may understate this variant."""
    warnings = []
    for key, distribution in found.space.items():
        kind = distribution.kind
        if kind == "choice":
            continue
        low, high = distribution.bounds
        positions = [_position(setting[key], kind, low, high) for _, _, setting, _ in found.chosen if key in setting]
        for side, count in (
            ("low", sum(p <= EDGE for p in positions)),
            ("high", sum(p >= 1 - EDGE for p in positions)),
        ):
            if positions and count * 2 >= len(positions):
                warnings.append(
                    f"{found.key}: {key} was chosen at the {side} end of [{low:g}, {high:g}] in {count} of "
                    f"{len(positions)} folds; the best setting may lie beyond it: widen the range"
                )
    return warnings


def importance(found: VariantSearch) -> dict[str, float]:
    """Optuna's fANOVA importance of each searched parameter over the variant's finished trials of every fold (two
    parameters or more, ten trials or more); empty where that cannot be estimated."""
    complete = [t for r in found.records for t in r["history"] if t["state"] == "complete" and t["value"] is not None]
    keys = [k for k in found.space if all(k in t["params"] for t in complete)]
    if len(keys) < 2 or len(complete) < 10:
        return {}
    optuna = import_optuna()
    searched = distributions(optuna, {key: found.space[key] for key in keys})
    study = optuna.create_study(direction=found.direction)
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={k: t["params"][k] for k in keys}, distributions=searched, value=t["value"]
            )
            for t in complete
        ]
    )
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study, evaluator=evaluator).items()}
    except (RuntimeError, ValueError):  # every trial scored the same, say
        return {}


def sentence(results: Results) -> str:
    """For the summary: how the variants were tuned, and whether their budgets differ."""
    found = searches(results)
    if not found:
        return ""
    untuned = [v.key for v in results.variants if v.cells and v.key not in {f.key for f in found}]
    budgets = sorted({f.trials for f in found})
    metric = found[0].metric if len({f.metric for f in found}) == 1 else "their metrics"
    if len(budgets) == 1 and not untuned:
        text = (
            f"Each variant was tuned inside every fold with {budgets[0]} trials, scored by inner-validation {metric}."
        )
    else:
        text = (
            "Tuning budgets differ: "
            + ", ".join(f"{f.key} {f.trials} trials" for f in found)
            + (f"; {', '.join(untuned)} not tuned" if untuned else "")
            + ", so differences mix the techniques with their search budgets."
        )
    unequal = unequal_searches(found)
    if unequal:
        text += " " + unequal
    failed = [f for f in found if f.failed_trials]
    if failed:
        listed = ", ".join(f"{f.key} {f.failed_trials} of {f.trials * len(f.chosen)}" for f in failed)
        text += f" Failed trials used up part of a budget: {listed} (see Tuning)."
    edges = sum(len(f.edges) for f in found)
    if edges:
        text += " One searched range was" if edges == 1 else f" {edges} searched ranges were"
        text += " mostly chosen at an end: see Tuning."
    return text


def unequal_searches(found: list[VariantSearch]) -> str:
    """A warning when the variants' trials per searched parameter differ by 2x or more: an equal number of trials
    spread over more parameters is a thinner search (20 trials for the learning rate alone against 20 over three).
    Where every variant searched as many parameters, a difference in trials says it (``sentence``)."""
    if len({f.parameters for f in found}) < 2:
        return ""
    low, high = min(f.per_parameter for f in found), max(f.per_parameter for f in found)
    if high < 2 * low:
        return ""
    listed = ", ".join(f"{f.key} {f.per_parameter:.3g} ({f.trials} for {_count(f.parameters)})" for f in found)
    return (
        f"Searches are unequal in trials per searched parameter: {listed}; the thinner searches may understate their "
        "variants (tune.trials_per_parameter scales each budget with its space)."
    )


def _count(parameters: int) -> str:
    return f"{parameters} parameter" + ("" if parameters == 1 else "s")


def trials_per_cell(variant: VariantResults) -> int | None:
    """The trials each tuned cell of ``variant`` ran (its stored searches), or None for an untuned variant."""
    return next((c.settings["search"]["trials"] for c in variant.cells if "search" in c.settings), None)


def budget_note(variant: VariantResults, reference: VariantResults | None) -> str:
    """Why ``variant``'s verdicts against the reference are not at an equal tuning budget, or '': one tuned and the
    other not, or tuned with different trials per cell. The leaderboard and the exports mark such a verdict."""
    if reference is None or variant is reference:
        return ""
    mine, theirs = trials_per_cell(variant), trials_per_cell(reference)
    if mine == theirs:
        return ""

    def budget(trials: int | None) -> str:
        return "untuned" if trials is None else f"tuned with {trials} trials per cell"

    return f"not equal-budget: {variant.key} {budget(mine)}, the reference {reference.key} {budget(theirs)}"


def _value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _spread(values: list[Any]) -> str:
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return f"{_value(float(np.median(values)))} [{_value(min(values))}–{_value(max(values))}]"
    counts = {str(v): values.count(v) for v in values}
    return ", ".join(f"{k} ×{n}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def draw(found: list[VariantSearch], drawer: Any) -> dict[str, str | None]:
    """The search-curve figure, through the report's figure writer (``octbench.report.figures.Drawer``)."""
    if not found:
        return {}
    curves = {f.key: f.curves for f in found}
    return {"search": drawer.draw("tuning search curves", plots.search_curves, curves, found[0].metric)}


def rows(found: list[VariantSearch]) -> list[dict[str, Any]]:
    """The tuning table for the exports: one row per tuned variant."""
    return [
        {
            "variant": f.key,
            "trials_per_cell": f.trials,
            "sampler": f.sampler,
            "metric": f.metric,
            "direction": f.direction,
            "searched_parameters": f.parameters,
            "trials_per_parameter": f.per_parameter,
            "tuned_cells": len(f.chosen),
            "tuning_seconds_per_cell": float(np.mean(f.seconds)),
            "failed_trials": f.failed_trials,
            "importance": "; ".join(f"{k} {v:.2f}" for k, v in importance(f).items()),
            "edges": "; ".join(f.edges),
        }
        for f in found
    ]


def render(found: list[VariantSearch], figure: str | None) -> str:
    """The report's tuning section (HTML) of the tuned variants ``found``, with its search-curve ``figure``."""
    e = html.escape
    rows = []
    for f in found:
        keys = list(f.space) or sorted({k for _, _, s, _ in f.chosen for k in s})
        chosen = "<br>".join(
            f"<code>{e(k)}</code> {e(_spread([s[k] for _, _, s, _ in f.chosen if k in s]))}"
            for k in keys
            if any(k in s for _, _, s, _ in f.chosen)
        )
        importance_text = ", ".join(f"{e(k)} {v:.2f}" for k, v in importance(f).items()) or "—"
        rows.append(
            f"<tr><td>{e(f.key)}</td><td>{f.trials} ({e(f.sampler)})</td><td>{f.parameters}</td>"
            f"<td>{f.per_parameter:.3g}</td><td>{len(f.chosen)}</td>"
            f"<td>{np.mean(f.seconds):.1f} s</td><td>{chosen}</td><td>{importance_text}</td>"
            f"<td>{f.failed_trials}</td></tr>"
        )
    per_fold = []
    for f in found:
        for seed, fold, setting, score in sorted(f.chosen, key=lambda c: c[:2]):
            values = ", ".join(f"{e(k)} = {e(_value(v))}" for k, v in setting.items())
            per_fold.append(
                f"<tr><td>{e(f.key)}</td><td>{seed}</td><td>{fold}</td><td>{values}</td><td>{score:.4f}</td></tr>"
            )
    warnings = [w for w in [unequal_searches(found)] if w] + [w for f in found for w in f.edges]
    parts = [
        '<p class="note">Each tuned cell searched its variant\'s settings on its own inner split: every trial '
        "trained on the fold's inner training part and was scored on its inner validation split, and the chosen "
        "setting was then trained and evaluated once on the held-out fold and the test split. The verdicts above "
        "compare these tuned cells. Variants that search a parameter alike were offered the same candidates for it "
        "in each fold (every random-search draw, and TPE's start-up trials). Chosen values: median [range] over "
        "folds; importance: Optuna's fANOVA over every fold's trials.</p>",
        '<div class="scroll"><table><thead><tr><th>variant</th><th>trials per cell</th><th>searched parameters</th>'
        "<th>trials per parameter</th><th>tuned cells</th>"
        "<th>tuning time per cell</th><th>chosen</th><th>importance</th><th>failed trials</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>",
    ]
    if warnings:
        parts.append('<ul class="warnings">' + "".join(f"<li>{e(w)}</li>" for w in warnings) + "</ul>")
    if figure:
        parts.append(
            f'<figure><img src="{figure}" alt="best inner-validation {e(found[0].metric)} so far against trials, '
            f'per variant" loading="lazy"><figcaption>Best inner-validation {e(found[0].metric)} so far against the '
            "trial number: the mean over tuned cells (a flat tail says the budget sufficed).</figcaption></figure>"
        )
    parts.append(
        '<details><summary>Chosen setting per fold</summary><div class="scroll"><table><thead><tr><th>variant</th>'
        "<th>seed</th><th>fold</th><th>setting</th><th>inner-validation score</th></tr></thead><tbody>"
        + "".join(per_fold)
        + "</tbody></table></div></details>"
    )
    return "\n".join(parts)
