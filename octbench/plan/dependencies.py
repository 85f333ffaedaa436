"""What a cell's result depends on besides its suite and its data: the code of every plugin it runs and the content
of every file its techniques read. One answer for the stored result's key (``plan.config_hash``), the run's
provenance and the tests of both, so that editing any of them reruns exactly the cells that use it.

A cell runs its dataset, model, preprocessors, augmenters and regularizers; the optimizer its settings name after
its regularizers have had their say (``weight-decay`` turns adam into adamw, ``optimizer`` picks its own); every
installed metric plugin (each is computed for every cell, and one may score a search's trials); and for a tuned
variant whatever a search's choices can name. A technique names the files it reads with ``Technique.input_files``
(a model's start weights).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from octbench.cell import search
from octbench.cell.cache import source_hash
from octbench.kinds import variant_lists
from octbench.suite import Suite, Variant, dataset_of


@dataclass(frozen=True)
class Dependencies:
    plugins: tuple[tuple[str, str], ...]  # (kind, name), sorted
    files: tuple[str, ...]  # absolute paths, sorted

    def sources(self, host: Any) -> dict[str, str]:
        """A hash of each plugin's source file (``kind:name``) and of each file's content (``file:<path>``)."""
        found = {f"{kind}:{name}": source_hash(host.get(kind, name).cls) for kind, name in self.plugins}
        return found | {f"file:{path}": file_hash(path) for path in self.files}


def of_cell(host: Any, suite: Suite, variant: Variant) -> Dependencies:
    """Every plugin and file a cell of ``variant`` (in ``suite``) depends on (see the module docstring)."""
    plugins: set[tuple[str, str]] = {("metric", name) for name in host.names("metric")}
    files: set[str] = set()
    for tried_suite, tried in _settings(suite, variant):
        refs = [("dataset", dataset_of(tried_suite, tried)), ("model", tried.model)]
        refs += [(kind, ref) for key, kind in variant_lists().items() for ref in getattr(tried, key)]
        for kind, ref in refs:
            plugins.add((kind, ref.name))
            files.update(_input_files(host, kind, ref))
        plugins.add(("optimizer", _optimizer(host, tried_suite, tried)))
    return Dependencies(tuple(sorted(plugins)), tuple(sorted(files)))


def of_run(host: Any, suite: Suite, variants: Iterable[Variant]) -> Dependencies:
    """Every plugin and file some cell of the run depends on: what its provenance records."""
    found = [of_cell(host, suite, variant) for variant in variants]
    plugins = {plugin for one in found for plugin in one.plugins}
    return Dependencies(tuple(sorted(plugins)), tuple(sorted({file for one in found for file in one.files})))


def _settings(suite: Suite, variant: Variant) -> Iterator[tuple[Suite, Variant]]:
    """The variant as written and, for a tuned one, with each value a search may choose from a list (which may name
    another plugin or file; a range only moves a number)."""
    yield suite, variant
    for key, distribution in variant.tune.space.items() if variant.tune else ():
        for value in distribution.choice or ():
            try:
                yield search.apply(suite, variant, {key: value})
            except Exception:  # not a valid setting: the suite's check says so
                continue


def _optimizer(host: Any, suite: Suite, variant: Variant) -> str:
    """The optimizer plugin the variant's cells build: the suite's, as the regularizers change it."""
    from octbench.cell.train import optimizer_options

    try:
        regularizers = [host.create("regularizer", ref.name, ref.params) for ref in variant.regularizers]
        options, _ = optimizer_options(suite.train, regularizers)
    except Exception:  # a hook that needs its model first: the cell decides, and fails with the reason
        return suite.train.optimizer.name
    return str(options.get("name", suite.train.optimizer.name))


def _input_files(host: Any, kind: str, ref: Any) -> set[str]:
    try:
        named = host.create(kind, ref.name, ref.params).input_files()
    except Exception:  # an invalid parameter or a missing file: the suite's check says so
        return set()
    return {str(Path(file).expanduser().resolve()) for file in named}


_hashes: dict[tuple[str, int, int], str] = {}


def file_hash(path: str) -> str:
    """A hash of a file's content, read once per size and modification time; 'missing' for a file not there."""
    try:
        stat = os.stat(path)
    except OSError:
        return "missing"
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _hashes[key] = digest.hexdigest()[:16]
    return _hashes[key]
