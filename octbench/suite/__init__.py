"""Stage 1 of a run (**suite** -> plan -> cells -> store -> report). The suite schema: validated typed models,
variants expanded and resolved (reading files is ``octbench.suite.file``).

A plugin reference is a name (``clahe``) or a mapping with ``name`` and parameters
(``{name: clahe, clip_limit: 2.0}``). A variant (and the suite's ``defaults``, an ablation's ``base`` and each of
its ``techniques``) may set ``model``, list ``preprocessors``, ``augmenters`` and ``regularizers``, and change
parameters of the suite's dataset (``dataset: {size: 64}``: the same images at another size).
Combining two of them (defaults, then base, then techniques, then the variant) appends the lists in order and
replaces the model; a ``model`` mapping without ``name`` only changes the current model's parameters, so a
technique can be ``{model: {batchnorm: true}}``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any, Literal, get_args

from pydantic import Field, create_model, field_validator, model_serializer, model_validator

from octbench.errors import SuiteError
from octbench.kinds import CLASSIC_LISTS, variant_lists
from octbench.params import StrictModel, shown

QUICK_EPOCHS = 2
QUICK_POOL = 3000
MAX_VARIANTS = 512  # an ablation of 9 techniques in full mode; more is a mistake or a job for several suites
MAX_NODES = 200_000  # values in a suite once YAML aliases are expanded: a real suite has hundreds
MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's seeds


_Strict = StrictModel


class PluginRef(_Strict):
    """``name`` plus parameters; written in YAML as a bare name or a mapping."""

    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value, "params": {}}
        if isinstance(value, dict) and "params" not in value:
            params = {k: v for k, v in value.items() if k != "name"}
            return {"name": value.get("name"), "params": params}
        return value

    @field_validator("name")
    @classmethod
    def _non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("a plugin name cannot be empty")
        return value

    def to_yaml(self) -> Any:
        return {"name": self.name, **self.params} if self.params else self.name


def _with_variant_lists(head: type[_Strict]) -> Any:
    """``head``, then a list of technique references per kind that variants list (``octbench.kinds``:
    ``preprocessors``, ``augmenters``, ``regularizers``...)."""
    lists: Any = {key: (list[PluginRef], Field(default_factory=list)) for key in variant_lists()}
    return create_model(f"{head.__name__}Lists", __base__=head, __module__=__name__, **lists)


def _as_before(dumped: Any) -> Any:
    """A dump without the fields a store written before them never had: no dataset change, and an empty list of a
    kind added since (so adding a kind keeps every stored cell's hash)."""
    dumped = _drop_none(dumped, "dataset")
    if isinstance(dumped, dict):
        for key in variant_lists():
            if key not in CLASSIC_LISTS and dumped.get(key) == []:
                dumped.pop(key)
    return dumped


class _TechniquesHead(_Strict):
    model: PluginRef | None = None


class Techniques(_with_variant_lists(_TechniquesHead)):  # type: ignore[misc]
    """What a variant, the defaults, an ablation base or an ablation technique contributes: a model, a list per
    kind of technique a variant lists, and dataset parameters."""

    dataset: dict[str, Any] | None = Field(
        None,
        description="parameters of the suite's dataset this variant changes ({size: 64}): the same images and labels, "
        "so the folds stay paired",
    )

    @model_serializer(mode="wrap")
    def _without_unset_dataset(self, handler: Any) -> dict[str, Any]:
        # a block that changes no dataset parameter dumps (and hashes) as it did before variants could
        return _as_before(handler(self))

    def then(self, other: Techniques) -> Techniques:
        """This, followed by ``other``: lists appended, model replaced (or its parameters patched), dataset
        parameters patched."""
        dataset = {**(self.dataset or {}), **(other.dataset or {})} or None
        model = self.model
        if other.model is not None:
            if other.model.name is not None or model is None:
                model = other.model
            else:
                model = PluginRef(name=model.name, params={**model.params, **other.model.params})
        lists = {key: [*getattr(self, key), *getattr(other, key)] for key in variant_lists()}
        return Techniques(model=model, dataset=dataset, **lists)


def _drop_none(dumped: Any, key: str) -> Any:
    if isinstance(dumped, dict) and dumped.get(key) is None:
        dumped.pop(key, None)
    return dumped


_Int = int


class Distribution(_Strict):
    """One searched value, written as exactly one of ``uniform: [low, high]``, ``log_uniform: [low, high]``,
    ``int: [low, high]``, ``log_int: [low, high]`` (both ends included) or ``choice: [a, b, ...]``."""

    uniform: tuple[float, float] | None = None
    log_uniform: tuple[float, float] | None = None
    int: tuple[_Int, _Int] | None = None  # the field named int hides the builtin in this class's annotations
    log_int: tuple[_Int, _Int] | None = None
    choice: list[Any] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [name for name in DISTRIBUTIONS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(DISTRIBUTIONS)}, not {len(given)}")
        kind = given[0]
        if kind != "choice":
            low, high = getattr(self, kind)
            if not low < high:
                raise ValueError(f"{kind}: the low end must be below the high end, not [{low}, {high}]")
            if kind.startswith("log") and low <= 0:
                raise ValueError(f"{kind}: both ends must be above 0, not [{low}, {high}]")
        elif any(isinstance(v, (dict, list)) for v in self.choice):
            raise ValueError("choice: each option must be a number, a string, true, false or null")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in DISTRIBUTIONS if getattr(self, name) is not None)

    @property
    def bounds(self) -> Any:
        return getattr(self, self.kind)


DISTRIBUTIONS = ("uniform", "log_uniform", "int", "log_int", "choice")
#: training settings that say where or how a cell runs, which no search may choose
UNSEARCHED_TRAIN = ("device", "timeout", "threads", "eval_batch_size", "compile", "deterministic")
SEARCH_METRIC_DEFAULT = "loss"


class Tune(_Strict):
    """Hyperparameter search inside each cell (``octbench.cell.search``): ``trials`` settings drawn from ``space`` are
    each trained on the cell's inner training part and scored on its inner validation split; the best is then
    trained and evaluated as the cell. Keys of ``space``: ``train.<setting>`` (``train.optimizer.lr``),
    ``model.<parameter>``, or ``<technique name>.<parameter>`` (searched only in variants that use it)."""

    trials: int = Field(20, ge=1, le=10_000, description="settings tried per cell: the same for every variant")
    trials_per_parameter: int | None = Field(
        None,
        ge=1,
        le=1_000,
        description="instead of trials: this many per parameter a variant searches, so a variant searching three "
        "parameters gets three times the trials of one searching only the learning rate",
    )
    space: dict[str, Distribution] = Field(min_length=1)
    metric: str = Field(
        SEARCH_METRIC_DEFAULT,
        description="what scores a trial on the inner validation split: loss (cross-entropy) or any reported metric",
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        None,
        description="the metric decides (loss and a metric declared lower-is-better are minimised); a direction that "
        "contradicts the metric is refused",
    )
    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna's TPE (seeded) or random search")

    @model_validator(mode="after")
    def _one_budget(self) -> Tune:
        if self.trials_per_parameter is not None and "trials" in self.model_fields_set:
            raise ValueError("give trials or trials_per_parameter, not both")
        return self

    @model_serializer(mode="wrap")
    def _without_unset_budget(self, handler: Any) -> dict[str, Any]:
        # a search without trials_per_parameter dumps (and hashes) as it did before it existed
        return _drop_none(handler(self), "trials_per_parameter")

    def for_space(self, space: dict[str, Distribution], trials: int | None = None) -> Tune:
        """This search over ``space`` (the keys that apply to one variant), its trials fixed: ``trials`` (a
        variant's own), else ``trials_per_parameter`` times the number of keys, else ``trials``."""
        if trials is None and self.trials_per_parameter is not None:
            trials = self.trials_per_parameter * len(space)
        return self.model_copy(update={"space": space, "trials": trials or self.trials, "trials_per_parameter": None})

    @field_validator("space")
    @classmethod
    def _keys_name_a_target(cls, space: dict[str, Distribution]) -> dict[str, Distribution]:
        for key in space:
            head, _, rest = key.partition(".")
            if not head or not rest or "" in rest.split("."):
                raise ValueError(f"'{key}' should be train.<setting>, model.<parameter> or <technique>.<parameter>")
            if head == "train" and rest.split(".")[0] in UNSEARCHED_TRAIN:
                raise ValueError(
                    f"'{key}' says where or how a cell runs, not what it learns (a trial's score does not depend on "
                    "it): it cannot be searched"
                )
        return space


class TuneOverride(_Strict):
    """A variant's own ``tune``: another number of trials, or more (or other) searched keys."""

    trials: int | None = Field(None, ge=1, le=10_000)
    space: dict[str, Distribution] = Field(default_factory=dict)


class VariantSpec(Techniques):
    name: str = Field(min_length=1, max_length=200)
    tune: TuneOverride | Literal[False] | None = Field(
        None, description="this variant's search: other trials or keys, or false for none (the report says so)"
    )


class Ablation(_Strict):
    mode: Literal["add-one", "leave-one-out", "full"]
    base: Techniques = Field(default_factory=Techniques)
    techniques: dict[str, Techniques] = Field(min_length=1)

    @model_validator(mode="after")
    def _not_too_many(self) -> Ablation:
        k = len(self.techniques)
        count = 2**k if self.mode == "full" else k + 1
        if count > MAX_VARIANTS:
            raise ValueError(
                f"mode '{self.mode}' with {k} techniques expands to {count:,} variants, more than {MAX_VARIANTS}: "
                "use add-one or leave-one-out, or split the techniques over several suites"
            )
        return self


class CV(_Strict):
    folds: int = Field(5, ge=2, le=50)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, max_length=100)
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="inner split of each fold's training part")
    test_split: bool = True

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if any(isinstance(seed, bool) for seed in seeds):
            raise ValueError("seeds are integers, not booleans")
        out_of_range = [seed for seed in seeds if not 0 <= seed <= MAX_SEED]
        if out_of_range:
            raise ValueError(f"seeds must be between 0 and {MAX_SEED}; got {shown(out_of_range)}")
        repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        if repeated:
            raise ValueError(f"seeds must differ from each other; repeated: {shown(repeated)}")
        return seeds


class OptimizerSettings(_Strict):
    """``name`` picks an optimizer plugin (adam, adamw, sgd, or a third party's); ``lr`` and ``weight_decay`` are
    common to all; every other key (``momentum``, ``nesterov`` for sgd...) is the plugin's own parameter."""

    name: str = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _collect_params(cls, value: Any) -> Any:
        if isinstance(value, dict) and "params" not in value:
            common = ("name", "lr", "weight_decay")
            return {
                **{k: value[k] for k in common if k in value},
                "params": {k: v for k, v in value.items() if k not in common},
            }
        return value

    def options(self) -> dict[str, Any]:
        """What ``Regularizer.configure_optimizer`` gets and may change: name, lr, weight_decay and the rest."""
        return {"name": self.name, "lr": self.lr, "weight_decay": self.weight_decay, **self.params}


CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
COMPILE_MODES = get_args(CompileMode)


class Train(_Strict):
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int | None = Field(None, ge=1, description="default: 512 on CPU, 4096 on CUDA (measured)")
    optimizer: OptimizerSettings = Field(default_factory=OptimizerSettings)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="training precision: bf16 autocast or float32; auto measures which is faster on a CPU with native "
        "bf16 (octbench.cell.machine) and takes bf16 on a GPU that has it",
    )
    compile: bool | CompileMode = Field(
        False,
        description="torch.compile the model for training (true: its default mode; reduce-overhead replays CUDA "
        "graphs); costs compile time per cell",
    )
    threads: int | None = Field(None, ge=1, description="CPU threads per cell (default: torch's, all cores)")
    timeout: float | None = Field(
        None,
        gt=0,
        description="seconds a cell may run before it is recorded as failed (checked during training; with worker "
        "processes a cell stuck elsewhere is killed a minute later)",
    )
    deterministic: bool = Field(
        False,
        description="torch's deterministic algorithms, for bit-for-bit repeatable CUDA runs (slower; ops without "
        "a deterministic kernel warn); CPU runs repeat exactly either way",
    )

    @model_validator(mode="before")
    @classmethod
    def _amp_was_renamed(cls, raw: Any) -> Any:
        """``amp`` (octbench 0.1) became ``precision``: ``amp: false`` is ``precision: fp32``."""
        if isinstance(raw, dict) and isinstance(raw.get("amp"), bool):
            amp = raw["amp"]
            raw = {k: v for k, v in raw.items() if k != "amp"}
            if not amp:
                raw.setdefault("precision", "fp32")
        return raw

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_setting(cls, value: Any) -> Any:
        if isinstance(value, bool) or value in COMPILE_MODES:
            return value
        raise ValueError(f"should be true, false or a torch.compile mode ({', '.join(COMPILE_MODES)}), not {value!r}")


class ExecutorSettings(_Strict):
    """How the cells run: ``name`` picks an executor plugin (``local``, ``ray``, or a third party's), ``stack`` how
    many cells train as one computation; every other key is a parameter of the executor (``parallel`` for local,
    ``address`` for Ray...), validated by it."""

    name: str = "local"
    stack: int | Literal["auto"] = Field(
        "auto", description="cells trained as one batched computation when their models allow it"
    )
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _collect_params(cls, value: Any) -> Any:
        if isinstance(value, dict) and "params" not in value:
            return {
                **{k: value[k] for k in ("name", "stack") if k in value},
                "params": {k: v for k, v in value.items() if k not in ("name", "stack")},
            }
        return value

    @field_validator("stack")
    @classmethod
    def _in_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 256:
            raise ValueError(f"should be 'auto' or a number from 1 to 256, not {value}")
        return value


class ReportSettings(_Strict):
    """How the report judges differences; `octbench report` options override them."""

    metric: str = Field("accuracy", description="the metric compared with the reference (octbench's or a plugin's)")
    rope: float = Field(
        0.01, gt=0, le=0.5, description="half-width of the region of practical equivalence (0.01 = one point)"
    )
    positive_class: str | None = Field(
        None, description="binary tasks: the class whose sensitivity is reported (name or index; default: minority)"
    )


class Suite(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str = ""
    dataset: PluginRef = Field(default_factory=lambda: PluginRef(name="octmnist", params={"size": 28}))
    cv: CV = Field(default_factory=CV)
    train: Train = Field(default_factory=Train)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    defaults: Techniques = Field(default_factory=Techniques)
    variants: list[VariantSpec] = Field(default_factory=list)
    ablation: Ablation | None = None
    plugins: list[str] = Field(default_factory=list)
    report: ReportSettings = Field(default_factory=ReportSettings)
    tune: Tune | None = Field(None, description="hyperparameter search inside each cell, for every variant")
    quick: bool = Field(
        False,
        description=f"a fast first look: each seed's pool subsampled to {QUICK_POOL} images (stratified), epochs "
        f"capped at {QUICK_EPOCHS}; `octbench run --quick` sets it",
    )

    @model_validator(mode="after")
    def _has_variants(self) -> Suite:
        if not self.variants and self.ablation is None:
            raise ValueError("a suite needs 'variants' (a list) or an 'ablation' block, or both")
        if self.dataset.name is None:
            raise ValueError("dataset needs a 'name'")
        names = [v.name for v in expand_variants(self)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(duplicates)}")
        return self

    @property
    def epochs(self) -> int:
        """The epochs a cell trains: ``train.epochs``, capped in a quick run."""
        return min(self.train.epochs, QUICK_EPOCHS) if self.quick else self.train.epochs

    def digest(self) -> str:
        # a suite without a search hashes as it did before searches existed
        dumped = self.model_dump(mode="json", exclude={"tune"} if self.tune is None else None)
        return hashlib.sha256(canonical_json(dumped).encode()).hexdigest()


class _VariantHead(_Strict):
    name: str
    model: PluginRef


class Variant(_with_variant_lists(_VariantHead)):  # type: ignore[misc]
    """A fully resolved variant: defaults applied, model named, a list per kind of technique a variant lists.
    ``role`` marks the comparison reference."""

    role: Literal["baseline", "variant"] = "variant"
    where: str = ""
    tune: Tune | None = None  # the search this variant's cells run: only keys that apply to it
    dataset: PluginRef | None = None  # its own dataset parameters ({size: 64}); None: the suite's dataset

    @model_serializer(mode="wrap")
    def _without_unset_dataset(self, handler: Any) -> dict[str, Any]:
        # a variant on the suite's dataset dumps (hashes, is stored) as before variants could change it
        return _as_before(handler(self))


def dataset_of(suite: Suite, variant: Variant) -> PluginRef:
    """The dataset ``variant``'s cells load: the suite's, with the variant's own parameters if it sets any."""
    return variant.dataset or suite.dataset


def expand_variants(suite: Suite) -> list[VariantSpec]:
    """The ablation (if any) expanded into named variants, then the explicit variants."""
    expanded: list[VariantSpec] = []
    if suite.ablation is not None:
        ab = suite.ablation
        names = list(ab.techniques)

        def combine(chosen: tuple[str, ...], label: str) -> VariantSpec:
            techniques = ab.base
            for technique in chosen:
                techniques = techniques.then(ab.techniques[technique])
            return VariantSpec(name=label, **techniques.model_dump())

        if ab.mode == "add-one":
            expanded.append(combine((), "baseline"))
            expanded += [combine((t,), f"+{t}") for t in names]
        elif ab.mode == "leave-one-out":
            expanded.append(combine(tuple(names), "all"))
            expanded += [combine(tuple(n for n in names if n != t), f"all-{t}") for t in names]
        else:
            for k in range(len(names) + 1):
                for chosen in itertools.combinations(names, k):
                    expanded.append(combine(chosen, "".join(f"+{t}" for t in chosen) or "baseline"))
    return [*expanded, *suite.variants]


def reference_name(suite: Suite) -> str | None:
    """The variant others are compared with: 'baseline', or the ablation's reference ('all' for leave-one-out)."""
    names = [v.name for v in expand_variants(suite)]
    if suite.ablation is not None and suite.ablation.mode == "leave-one-out":
        return "all"
    return "baseline" if "baseline" in names else None


def resolve_variants(suite: Suite) -> list[Variant]:
    reference = reference_name(suite)
    resolved = []
    for index, spec in enumerate(expand_variants(suite)):
        merged = suite.defaults.then(spec)
        if merged.model is None or merged.model.name is None:
            raise SuiteError(
                f"variant '{spec.name}' has no model: set 'defaults: {{model: seed-cnn}}' or a 'model' on the variant."
            )
        resolved.append(
            Variant(
                name=spec.name,
                model=merged.model,
                **{key: getattr(merged, key) for key in variant_lists()},
                dataset=_patched(suite.dataset, merged.dataset),
                role="baseline" if spec.name == reference else "variant",
                where=_variant_location(suite, spec.name, index),
            )
        )
        resolved[-1] = resolved[-1].model_copy(update={"tune": variant_tune(suite.tune, spec.tune, resolved[-1])})
    _every_key_searched_somewhere(suite, resolved)
    return resolved


def _patched(dataset: PluginRef, params: dict[str, Any] | None) -> PluginRef | None:
    """The suite's dataset with a variant's parameters, or None when they change nothing."""
    if not params:
        return None
    merged = {**dataset.params, **params}
    return None if merged == dataset.params else PluginRef(name=dataset.name, params=merged)


def variant_tune(tune: Tune | None, own: TuneOverride | Literal[False] | None, variant: Variant) -> Tune | None:
    """The search ``variant``'s cells run: the suite's, with the variant's own trials and keys, keeping only keys
    that name a train setting, the model, or a technique the variant uses. None when nothing is searched."""
    if own is False or (tune is None and own is None):
        return None
    if tune is None:
        if own.trials is None or not own.space:
            raise SuiteError(
                f"variant '{variant.name}': a variant's tune needs 'trials' and 'space' where the suite has no "
                "'tune' block"
            )
        tune = Tune(trials=own.trials, space=own.space)
    elif own is not None:
        tune = tune.model_copy(update={"space": {**tune.space, **own.space}})
    space = {key: d for key, d in tune.space.items() if searched_in(key, variant)}
    return tune.for_space(space, own.trials if own else None) if space else None


def searched_in(key: str, variant: Variant) -> bool:
    """Whether the search key applies to the variant: train and model keys always, a technique's when it is used."""
    head = key.split(".", 1)[0]
    names = {variant.model.name} | {ref.name for kind in variant_lists() for ref in getattr(variant, kind)}
    return head in ("train", "model") or head in names


def _every_key_searched_somewhere(suite: Suite, variants: list[Variant]) -> None:
    keys = set(suite.tune.space) if suite.tune else set()
    keys |= {key for spec in expand_variants(suite) if spec.tune for key in spec.tune.space}
    unused = sorted(key for key in keys if not any(searched_in(key, v) for v in variants))
    if unused:
        raise SuiteError(
            f"tune.space: {', '.join(unused)} names a technique no variant uses; search keys are "
            "train.<setting>, model.<parameter> or <technique name>.<parameter>"
        )


def _variant_location(suite: Suite, name: str, index: int) -> str:
    explicit = [v.name for v in suite.variants]
    if name in explicit:
        return f"variants[{explicit.index(name)}]"
    return "ablation"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


# --- reading a suite file --------------------------------------------------------------------------------------
