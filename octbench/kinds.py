"""The kinds of plugin octbench knows, named once. Everything else takes them from here, when it is used: the hooks
(``register_<kind>s``, generated), the plugin host and ``octbench plugins``, the suite's variant lists and their
reference checks, what a cell depends on (its configuration hash and provenance), the starter kit and the
conformance kit's common checks.

Adding a kind is its entry below and its base class; then give it the code that uses it (the trainer applies
augmenters, the report shows report sections...). A kind whose techniques a variant lists names its suite key in
``variant_list``: ``Variant`` and ``Techniques`` gain that list, and a variant that leaves it empty is stored and
hashed as before the kind existed (stores keep their cells).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    name: str
    #: the base classes its techniques derive from, as "module:Class" (the first is the one the starter uses)
    bases: tuple[str, ...]
    #: what its hook registers: the hook's docstring
    doc: str
    #: the suite key of a variant's list of techniques of this kind ('' where variants do not list them)
    variant_list: str = ""

    def base_classes(self) -> tuple[type, ...]:
        found = []
        for path in self.bases:
            module, _, name = path.partition(":")
            found.append(getattr(importlib.import_module(module), name))
        return tuple(found)


REGISTRY: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "dataset",
            ("octbench.technique:Dataset",),
            "Register ``octbench.technique.Dataset`` subclasses: sources of train/val/test images and labels.",
        ),
        Kind(
            "preprocessor",
            ("octbench.technique:Preprocessor", "octbench.technique:Resampler"),
            "Register ``Preprocessor`` (fitted transforms) and ``Resampler`` subclasses (training part only).",
            "preprocessors",
        ),
        Kind(
            "augmenter",
            ("octbench.technique:Augmenter",),
            "Register ``Augmenter`` subclasses: random batch transforms applied at training time only.",
            "augmenters",
        ),
        Kind(
            "model",
            ("octbench.technique:Model",),
            "Register ``Model`` subclasses: builders of a torch module for given channels, classes and size.",
        ),
        Kind(
            "regularizer",
            ("octbench.technique:Regularizer",),
            "Register ``Regularizer`` subclasses: anything that changes training (losses, schedules, stopping).",
            "regularizers",
        ),
        Kind(
            "optimizer",
            ("octbench.technique:Optimizer",),
            "Register ``Optimizer`` subclasses: builders of a torch optimizer, named by a suite's ``train.optimizer``.",
        ),
        Kind(
            "metric",
            ("octbench.technique:Metric",),
            "Register ``Metric`` subclasses: numbers computed for every cell on each split, shown and compared.",
        ),
        Kind(
            "report-section",
            ("octbench.technique:ReportSection",),
            "Register ``ReportSection`` subclasses: sections of the report (HTML, figures, export rows, a sentence).",
        ),
        Kind(
            "executor",
            ("octbench.technique:Executor",),
            "Register ``Executor`` subclasses: ways to run a suite's cells (local processes, a Ray cluster, SLURM...).",
        ),
    )
}
#: the variant lists every store was written with: dumped (and hashed) even when empty
CLASSIC_LISTS = ("preprocessors", "augmenters", "regularizers")


def kinds() -> tuple[str, ...]:
    return tuple(REGISTRY)


def hook_name(kind: str) -> str:
    """The hook a plugin implements to register techniques of ``kind`` (``register_report_sections``...)."""
    return f"register_{kind.replace('-', '_')}s"


def hook_kinds() -> dict[str, str]:
    """{hook name: kind}."""
    return {hook_name(kind): kind for kind in REGISTRY}


def variant_lists() -> dict[str, str]:
    """{suite key of a variant's list: kind}: ``preprocessors: preprocessor``..."""
    return {k.variant_list: k.name for k in REGISTRY.values() if k.variant_list}


def bases(kind: str) -> tuple[type, ...]:
    """The base classes techniques of ``kind`` derive from."""
    return REGISTRY[kind].base_classes()


def __getattr__(name: str) -> Any:
    # KINDS and VARIANT_LISTS, read when asked for: a kind added to REGISTRY shows in them
    if name == "KINDS":
        return kinds()
    if name == "VARIANT_LISTS":
        return variant_lists()
    raise AttributeError(f"module 'octbench.kinds' has no attribute {name!r}")
