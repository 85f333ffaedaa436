"""The documentation: docs/plugins.md documents every hook and every example on the page works as written; the
guarantees table of docs/guarantees.md names tests that exist; every command the README and docs/ show is one the
command line accepts; every page they link to exists."""

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
EXAMPLES = [
    block
    for block in re.findall(r"```python\n(.*?)```", TEXT, re.S)
    if "@hookimpl" in block and "def register_commands" not in block
]
COMMAND_EXAMPLE = next(b for b in re.findall(r"```python\n(.*?)```", TEXT, re.S) if "def register_commands" in b)
HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_"))


def test_every_hook_has_a_section_and_an_example():
    for hook in HOOKS:
        assert re.search(rf"^## .*`{hook}`", TEXT, re.M), f"{hook} has no section in docs/plugins.md"
    registered = {hook for block in [*EXAMPLES, COMMAND_EXAMPLE] for hook in re.findall(r"def (register_\w+)\(", block)}
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


def test_the_guides_command_example_adds_a_command(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from octbench.cli import cli

    path = tmp_path / "guide_command.py"
    path.write_text(COMMAND_EXAMPLE)
    monkeypatch.setenv("OCTBENCH_PLUGINS", str(path))
    monkeypatch.setattr(cli, "commands", dict(cli.commands))  # this test's plugin commands leave with it
    monkeypatch.setattr(cli, "plugins_added", False)
    result = CliRunner().invoke(cli, ["guide-hello", "octbench"])
    assert result.exit_code == 0 and result.output == "hello, octbench\n", result.output


def test_every_guarantee_in_the_readme_names_tests_that_exist():
    page = (GUIDE.parent / "guarantees.md").read_text()
    table = page.split("| promise | test |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) >= 10, "the guarantees table is where docs/guarantees.md says"
    tests = GUIDE.parents[1] / "tests"
    for row in rows:
        names = re.findall(r"`(tests/\w+\.py::)?(test_\w+)`", row.rsplit("|", 2)[1])
        assert names, f"a guarantee names no test: {row[:80]}"
        for path, name in names:
            module = tests.parent / path[:-2] if path else tests / "test_faults.py"
            assert f"def {name}(" in module.read_text(), f"docs/guarantees.md names {name}, which {module.name} lacks"


DOCS = [GUIDE.parents[1] / "README.md", *sorted(GUIDE.parent.glob("*.md"))]


def code_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(language, lines) of every fenced code block of a Markdown page."""
    blocks, current = [], None
    for line in text.splitlines():
        fence = re.match(r"\s*```(\w*)", line)
        if fence and current is None:
            current = (fence.group(1), [])
        elif fence:
            blocks.append(current)
            current = None
        elif current is not None:
            current[1].append(line)
    return blocks


def commands_shown(text: str) -> list[str]:
    """Every `octbench ...` command line in a page's shell and text blocks (synopsis lines included), without
    comments."""
    found = []
    for language, lines in code_blocks(text):
        if language not in ("bash", "text", "sh", ""):
            continue
        for line in lines:
            for part in re.split(r"&&|;", line.split(" #")[0]):
                match = re.search(r"(?:^|\s|/)octbench\s+(\S.*)", part)
                if match:
                    found.append(match.group(1).strip())
    return found


def unknown_words(command: str) -> list[str]:
    """The subcommands and options of ``command`` (``run smoke --quick``) the command line does not have."""
    import click

    from octbench.cli import cli

    node, unknown, context = cli, [], click.Context(cli)
    for word in command.split():
        word = word.strip("[]")
        if isinstance(node, click.Group) and not word.startswith("-"):
            choices = word.split("|")
            unknown += [c for c in choices if c not in node.list_commands(context)]
            if len(choices) > 1 or unknown:
                break
            node = node.get_command(context, word)
        elif word.startswith("--"):
            options = {opt for param in node.params for opt in getattr(param, "opts", [])} | {"--help"}
            if word.split("=")[0] not in options:
                unknown.append(f"{node.name} {word}")
    return unknown


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_every_command_a_page_shows_is_one_the_command_line_accepts(page):
    commands = commands_shown(page.read_text())
    for command in commands:
        assert not unknown_words(command), f"{page.name}: `octbench {command}`: {unknown_words(command)}"


def test_the_pages_show_commands_and_the_checker_finds_wrong_ones():
    shown = {page.name: commands_shown(page.read_text()) for page in DOCS}
    assert len(shown["README.md"]) >= 4 and len(shown["suites.md"]) >= 8, shown
    assert unknown_words("run smoke --quick --no-such-flag") == ["run --no-such-flag"]
    assert unknown_words("data fetch|frobnicate") == ["frobnicate"]


def test_every_page_the_docs_link_to_exists():
    for page in DOCS:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
