"""The house's shape: no module imports one that imports it back, directly or round a loop, and importing octbench
does no work."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "octbench"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every octbench module ``path`` imports anywhere: at the top, inside functions, under TYPE_CHECKING."""
    found = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `from octbench.report import collect` names a module
                name = name.rpartition(".")[0]
            if name and name != "octbench":  # the package's own __init__ is the hook marker only
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(files)) - {name} for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert "octbench.report.analysis" in graph and "octbench.runner" in graph["octbench.cli"]
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_importing_octbench_does_no_work():
    """A plugin imports octbench for ``hookimpl``: that loads no torch, sleeps nowhere and samples nothing; the
    command line decides the CPU wait policy before it loads torch."""
    probe = (
        "import builtins, time\n"
        "seen = []\n"
        "time.sleep = lambda s: seen.append(f'slept {s}')\n"
        "real_open = builtins.open\n"
        "builtins.open = lambda f, *a, **k: (seen.append(str(f)), real_open(f, *a, **k))[1]\n"
        "import sys, octbench\n"
        "print('torch' in sys.modules, [s for s in seen if s.startswith('slept') or s.startswith('/proc')])\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False []"
    cli = subprocess.run(
        [sys.executable, "-c", "import sys, octbench.cli; print('torch' in sys.modules)"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert cli.stdout.strip() == "False", "the command line loads torch only after main() has decided"


def test_every_kind_has_its_hook_and_its_base_class():
    from octbench import hookspecs
    from octbench.kinds import KINDS, VARIANT_LISTS, hook_name
    from octbench.technique import KIND_BASES

    declared = {name for name in vars(hookspecs) if name.startswith("register_")}
    assert declared == {hook_name(kind) for kind in KINDS} | {"register_commands"}
    assert set(KIND_BASES) == set(KINDS) and set(VARIANT_LISTS.values()) <= set(KINDS)


def test_no_function_in_octbench_is_over_80_lines():
    long = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 80
    ]
    assert long == []


TRAINED = {"run_dir", "smoke_dir", "run_suite", "octbench_run"}  # fixtures and calls that train a model


def test_no_report_test_in_the_fast_tier_trains_a_model():
    """The report, export, image and section tests of the fast tier read stores written from numbers."""
    tests = Path(__file__).parent
    found = []
    for name in ("test_report.py", "test_exports.py", "test_images.py", "test_sections.py"):
        for node in ast.parse((tests / name).read_text()).body:
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test_"):
                continue
            slow = any("slow" in ast.unparse(d) for d in node.decorator_list)
            used = {a.arg for a in node.args.args} | {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            if not slow and used & TRAINED:
                found.append(f"{name}::{node.name} uses {sorted(used & TRAINED)}")
    assert found == []


HEAVY = ("torch", "sklearn", "scipy", "matplotlib", "optuna", "captum", "pandas", "cv2", "albumentations", "imblearn")


def _imported(args: list[str], env: dict[str, str]) -> tuple[int, set[str]]:
    """The exit code of ``octbench ARGS`` and the top-level packages it imported (``python -X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "octbench", *args], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    names = {
        line.rsplit("|", 1)[1].strip().split(".")[0] for line in done.stderr.splitlines() if "import time:" in line
    }
    return done.returncode, names


def test_the_command_line_starts_without_heavy_imports(tmp_path):
    """``--version``, ``--help``, ``plugins`` and ``check``'s argument errors import none of torch, scikit-learn,
    scipy, matplotlib, optuna or captum: ``--help`` and ``plugins`` read the remembered plugin listing
    (``octbench.listing``). The first command after a plugin changes imports the plugins once, to remember them."""
    env = {**os.environ, "OCTBENCH_CACHE_DIR": str(tmp_path / "cache")}
    code, first = _imported(["--help"], env)
    assert code == 0 and "torch" in first, "the first listing imports the plugins"
    for args, expected in (
        (["--version"], 0),
        (["--help"], 0),
        (["plugins"], 0),
        (["plugins", "--json"], 0),
        (["check", "--no-such-option"], 2),
        (["report"], 2),
    ):
        code, names = _imported(args, env)
        assert code == expected, (args, code)
        assert sorted(names & set(HEAVY)) == [], f"octbench {' '.join(args)} imported {sorted(names & set(HEAVY))}"
    code, names = _imported(["data", "--help"], env)
    assert code == 0, "a plugin's command still runs: its plugin is imported when it is used"
