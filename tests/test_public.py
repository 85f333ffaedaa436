"""The import paths plugin authors may use (``octbench.public``) all work, and the guide, the README, the example
package and every starter package import nothing else from octbench."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from octbench.public import PUBLIC
from octbench.starter import KINDS, TECHNIQUES, new_plugin

REPO = Path(__file__).resolve().parents[1]
IMPORT = re.compile(r"^\s*from (octbench(?:\.\w+)*) import ([\w, ]+)", re.M)
DOTTED = re.compile(r"`(octbench(?:\.\w+)+)`")


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_public_name_imports(module):
    found = importlib.import_module(module)
    for name in PUBLIC[module]:
        assert getattr(found, name, None) is not None, f"{module}.{name} is declared public but is gone"


def _used(text: str) -> set[tuple[str, str]]:
    """(module, name) of every ``from octbench... import ...`` and every `octbench.x.y` named in ``text``."""
    used = {(module, name.strip()) for module, names in IMPORT.findall(text) for name in names.split(",")}
    for dotted in DOTTED.findall(text):
        module, _, name = dotted.rpartition(".")
        used.add((dotted, "") if dotted in PUBLIC else (module, name))
    return used


def _problems(used: set[tuple[str, str]]) -> list[str]:
    return sorted(
        f"{module}.{name}" if name else module
        for module, name in used
        if module not in PUBLIC or (name and name not in PUBLIC[module] and f"{module}.{name}" not in PUBLIC)
    )


def test_the_docs_and_the_example_package_use_only_public_paths():
    texts = [*(REPO / "docs").glob("*.md"), REPO / "README.md", *(REPO / "examples").rglob("*.py")]
    used = set().union(*(_used(path.read_text()) for path in texts))
    # the guides name internals where they explain them (benchmarks, guarantees): only plugins.md and the example
    # package are written for plugin authors, and only their imports and `octbench.x.y` names must be public
    authors = [REPO / "docs" / "plugins.md", *(REPO / "examples").rglob("*.py")]
    wanted = set().union(*(_used(path.read_text()) for path in authors))
    assert wanted and wanted <= used
    assert _problems(wanted) == []


@pytest.mark.parametrize("kind", [k for k in KINDS if k in TECHNIQUES])
def test_a_starter_package_imports_only_public_paths(tmp_path, kind):
    root = new_plugin(f"my-{kind}", kind, tmp_path)
    used = set().union(*(_used(path.read_text()) for path in root.rglob("*.py")))
    assert ("octbench", "hookimpl") in used and _problems(used) == []


def test_a_broken_public_path_fails_the_check(monkeypatch):
    import octbench.technique as technique

    monkeypatch.delattr(technique, "Augmenter")
    with pytest.raises(AssertionError, match=r"octbench\.technique\.Augmenter"):
        test_every_public_name_imports("octbench.technique")
    assert _problems({("octbench.train", "Learner")}) == ["octbench.train.Learner"]
