"""Hyperparameter search inside each cell, with Optuna: nested in the folds, so nothing held out informs a choice.

A tuned cell (its variant has a ``tune`` search, ``octbench.suite.Tune``) first runs ``tune.trials`` trials. Each
trial draws a setting from ``tune.space`` (Optuna's TPE sampler, seeded per cell, or random search), trains on the
cell's inner training part and is scored on its inner validation split alone: a trial never preprocesses, predicts
or scores a held-out or test image (``octbench.cell.execute.run_trial``). The best setting then trains as the cell
itself, which is evaluated once on the held-out fold and the test split, as an untuned cell is. Every variant gets
the same number of trials unless the suite says otherwise, and the report says when budgets differ.

Each cell's study is kept in a journal beside the run's store (``tuning.journal``, Optuna's ``JournalStorage``, safe
for worker processes side by side), so a killed run resumes a cell at its next trial and never trains a finished
trial again; a cell already in the store runs no trial at all. A trial that was running when the run was killed
did not finish, and one that failed in an earlier attempt may have failed for a passing reason (out of memory):
both are tried afresh, with new settings drawn. ``octbench run --fresh`` deletes the journal with the store.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from octbench.cell.deadline import TimeLimitExceeded
from octbench.errors import CellFailed, Interrupted
from octbench.kinds import variant_lists
from octbench.suite import Distribution, Suite, Train, Tune, Variant

JOURNAL = "tuning.journal"  # beside results.sqlite
FILES = (JOURNAL, f"{JOURNAL}.lock")  # the journal and the lock Optuna holds on it while it writes

TrialRunner = Callable[[dict[str, Any]], float]


def apply(suite: Suite, variant: Variant, params: dict[str, Any]) -> tuple[Suite, Variant]:
    """``suite`` and ``variant`` with a trial's (or the chosen) setting: ``train.*`` keys set in the suite's
    training settings, ``model.*`` in the model's parameters, ``<technique>.*`` in every use of that technique."""
    train = suite.train.model_dump(mode="json")
    refs = {kind: [ref.model_copy(deep=True) for ref in getattr(variant, kind)] for kind in variant_lists()}
    model = variant.model.model_copy(deep=True)
    for key, value in params.items():
        head, rest = key.split(".", 1)
        if head == "train":
            _set(train, rest.split("."), value)
            continue
        if head in ("model", model.name):
            _set(model.params, rest.split("."), value)
        for ref in (ref for kind in variant_lists() for ref in refs[kind] if ref.name == head):
            _set(ref.params, rest.split("."), value)
    suite = suite.model_copy(update={"train": Train.model_validate(train)})
    return suite, variant.model_copy(update={"model": model, **refs})


def _set(target: dict[str, Any], path: list[str], value: Any) -> None:
    for name in path[:-1]:
        if name not in target and isinstance(target.get("params"), dict):  # an optimizer's own parameters
            target = target["params"]
        target = target.setdefault(name, {})
    last = path[-1]
    if last not in target and isinstance(target.get("params"), dict):
        target = target["params"]
    target[last] = value


def distributions(optuna: Any, space: dict[str, Distribution]) -> dict[str, Any]:
    """Optuna's distribution for each searched key: what a trial draws from, and what the report's importance
    analysis reads the trials with."""
    d = optuna.distributions

    def one(distribution: Distribution) -> Any:
        kind, bounds = distribution.kind, distribution.bounds
        if kind == "choice":
            return d.CategoricalDistribution(bounds)
        if kind in ("int", "log_int"):
            return d.IntDistribution(bounds[0], bounds[1], log=kind == "log_int")
        return d.FloatDistribution(bounds[0], bounds[1], log=kind == "log_uniform")

    return {key: one(distribution) for key, distribution in space.items()}


def _sampler(optuna: Any, tune: Tune, seed: int, restart: int) -> Any:
    """The search's sampler. Its random draws (all of random search's, TPE's start-up trials) are common random
    numbers (``shared_draws``): every variant of a (seed, fold) is offered the same candidates for a parameter they
    both search. TPE's own proposals after them depend on each variant's scores, so they differ."""
    shared = shared_draws(optuna, seed)
    if tune.sampler == "random":
        return shared
    # TPE's first trials are random draws; a budget of 20 spends 6 of them there, 9 or fewer spend 3 at least
    startup = max(3, min(10, tune.trials // 3))
    tpe = optuna.samplers.TPESampler(seed=(seed + restart) % 2**32, n_startup_trials=startup)
    return _StartShared(optuna, tpe, shared, startup)


def shared_draws(optuna: Any, seed: int) -> Any:
    """Random search whose draw of parameter ``name`` in trial ``k`` comes from a stream of its own, seeded by the
    cell's seed, the name and k: whatever else a variant searches, and in whatever order, its k-th learning rate is
    every other variant's k-th learning rate in the same (seed, fold)."""

    class SharedDraws(optuna.samplers.RandomSampler):
        def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
            stream = np.random.SeedSequence([seed, zlib.crc32(param_name.encode()), trial.number])
            own = optuna.samplers.RandomSampler(seed=int(stream.generate_state(1)[0]))
            return own.sample_independent(study, trial, param_name, param_distribution)

    return SharedDraws(seed=seed)


class _StartShared:
    """TPE, whose start-up trials draw from ``shared`` (an Optuna sampler by delegation: ``BaseSampler``'s hooks)."""

    def __init__(self, optuna: Any, tpe: Any, shared: Any, startup: int) -> None:
        self.tpe, self.shared, self.startup = tpe, shared, startup
        self.counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

    def __getattr__(self, name: str) -> Any:  # infer_relative_search_space, sample_relative, before/after_trial...
        return getattr(self.tpe, name)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        if len(study.get_trials(deepcopy=False, states=self.counted)) < self.startup:
            return self.shared.sample_independent(study, trial, param_name, param_distribution)
        return self.tpe.sample_independent(study, trial, param_name, param_distribution)


def study_name(variant: str, config_hash: str, seed: int, fold: int) -> str:
    return f"{variant}/{config_hash}/seed {seed}/fold {fold}"


def import_optuna() -> Any:
    """Optuna, imported on first use (a run without a search never loads it), its per-trial INFO lines silenced."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_study(name: str, direction: str, journal: str | None) -> Any:
    """The cell's study, from the run's journal (created, or found again after a kill), or in memory where there is
    no journal or its folder is not on this machine (a Ray node that does not share the driver's disk)."""
    optuna = import_optuna()
    storage = None
    if journal and Path(journal).parent.is_dir():
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True)


def direction(tune: Tune, higher_is_better: dict[str, bool]) -> str:
    """Which way a search optimises ``tune.metric``: as the metric says (``octbench.cell.metrics.higher_is_better``), so
    a lower-is-better metric can never keep its worst trial; ``plan.check_search`` refuses a ``tune.direction``
    that says otherwise."""
    return "maximize" if higher_is_better[tune.metric] else "minimize"


def search(
    tune: Tune,
    name: str,
    seed: int,
    run_trial: TrialRunner,
    *,
    goal: str,
    journal: str | None = None,
    describe_failure: Callable[[BaseException], str] = str,
) -> dict[str, Any]:
    """Run the study's remaining trials (``tune.trials`` finished ones in all) towards ``goal`` ("maximize" or
    "minimize", ``direction``) and return the search's record: the chosen setting, its inner-validation score and
    every trial. Raises ``CellFailed`` when no trial finished."""
    optuna = import_optuna()
    state = optuna.trial.TrialState
    study = open_study(name, goal, journal)
    # a trial that failed in an earlier attempt at this cell (a killed run, or one whose trials ran out of memory)
    # is tried afresh: only this attempt's failures use up the budget, so a rerun can succeed where one failed
    earlier = len(study.trials)

    def finished() -> list[Any]:
        return [
            t for t in study.get_trials(deepcopy=False)
            if t.state == state.COMPLETE or (t.state == state.FAIL and t.number >= earlier)
        ]  # fmt: skip

    found = len(finished())
    # seeded per (seed, fold) and per trial number: an uninterrupted run draws the same settings every time, and a
    # resumed one does not draw its first settings again (its trials have new numbers)
    study.sampler = _sampler(optuna, tune, seed, len(study.trials))
    space = distributions(optuna, tune.space)
    while len(finished()) < tune.trials:
        trial = study.ask(fixed_distributions=space)
        params = dict(trial.params)
        start = time.perf_counter()
        try:
            value = float(run_trial(params))
            error = "" if math.isfinite(value) else f"the trial scored {value} on the inner validation split"
        except (KeyboardInterrupt, Interrupted, TimeLimitExceeded):  # the run, or the cell's own limit, stops
            raise
        except (Exception, SystemExit) as exc:
            value, error = float("nan"), describe_failure(exc)
        trial.set_user_attr("seconds", time.perf_counter() - start)
        if error:
            trial.set_user_attr("error", error)
            study.tell(trial, state=state.FAIL)
        else:
            study.tell(trial, value)
    return _record(study, tune, found, finished(), optuna)


def _record(study: Any, tune: Tune, found: int, trials: list[Any], optuna: Any) -> dict[str, Any]:
    state = optuna.trial.TrialState
    complete = [t for t in trials if t.state == state.COMPLETE]
    if not complete:
        first = next((t.user_attrs.get("error", "") for t in trials), "")
        raise CellFailed(f"every one of the search's {len(trials)} trials failed; the first: {first}")
    best = study.best_trial
    return {
        "trials": tune.trials,
        "metric": tune.metric,
        "direction": study.direction.name.lower(),
        "sampler": tune.sampler,
        "chosen": dict(best.params),
        "score": float(best.value),
        "resumed_after": found,
        "seconds": sum(float(t.user_attrs.get("seconds", 0.0)) for t in trials),
        "history": [
            {
                "number": t.number,
                "params": dict(t.params),
                "value": None if t.value is None else float(t.value),
                "state": t.state.name.lower(),
                "error": t.user_attrs.get("error", ""),
                "seconds": float(t.user_attrs.get("seconds", 0.0)),
            }
            for t in trials
        ],
    }


def journal_path(out: str | Path | None) -> str:
    return str(Path(out) / JOURNAL) if out is not None else ""
