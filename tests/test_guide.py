"""docs/plugins.md: every hook is documented there, and every example on the page works as written. The README's
guarantees table names tests that exist."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from octbench import hookspecs
from octbench.plugins import PluginHost
from octbench.testing import check_technique

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
TEXT = GUIDE.read_text()
EXAMPLES = [block for block in re.findall(r"```python\n(.*?)```", TEXT, re.S) if "@hookimpl" in block]
HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_"))


def test_every_hook_has_a_section_and_an_example():
    for hook in HOOKS:
        assert re.search(rf"^## .*`{hook}`", TEXT, re.M), f"{hook} has no section in docs/plugins.md"
    registered = {hook for block in EXAMPLES for hook in re.findall(r"def (register_\w+)\(", block)}
    assert registered == set(HOOKS), "every hook has a runnable example"


@pytest.mark.parametrize("index", range(len(EXAMPLES)), ids=lambda i: re.search(r"name = \"([^\"]+)\"", EXAMPLES[i])[1])
def test_the_guides_example_conforms(index, tmp_path):
    path = tmp_path / f"guide_example_{index}.py"
    path.write_text(EXAMPLES[index])
    host = PluginHost.load([path])
    mine = [reg.cls for reg in host.all() if reg.source == str(path)]
    assert mine, "the example registers something"
    for cls in mine:
        check_technique(cls)


def test_every_guarantee_in_the_readme_names_tests_that_exist():
    readme = (GUIDE.parents[1] / "README.md").read_text()
    table = readme.split("| promise | test |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) >= 10, "the guarantees table is where the README says"
    tests = GUIDE.parents[1] / "tests"
    for row in rows:
        names = re.findall(r"`(tests/\w+\.py::)?(test_\w+)`", row.rsplit("|", 2)[1])
        assert names, f"a guarantee names no test: {row[:80]}"
        for path, name in names:
            module = tests.parent / path[:-2] if path else tests / "test_faults.py"
            assert f"def {name}(" in module.read_text(), f"the README names {name}, which {module.name} lacks"
