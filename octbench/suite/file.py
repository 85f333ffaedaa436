"""Suite files: found (a path, or a shipped suite's name), read, YAML parsed safely (no repeated keys, no alias
bombs), ``--set`` overrides applied, and validated into ``octbench.suite.Suite``, with errors pointing at the line.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from octbench.errors import SuiteError
from octbench.params import shown
from octbench.suite import MAX_NODES, Suite


def shipped_suites() -> dict[str, Path]:
    """The suites octbench ships (package ``octbench.suites``), by name."""
    folder = Path(str(importlib.resources.files("octbench.suites")))
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def find_suite(argument: str | Path) -> Path:
    """A suite file's path: ``argument`` itself when it exists, else the shipped suite of that name."""
    path = Path(argument)
    if path.exists() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    shipped = shipped_suites()
    if str(argument) in shipped:
        return shipped[str(argument)]
    raise SuiteError(
        f"no suite file '{argument}' here, and octbench ships no suite of that name: give a path, or one of "
        f"{', '.join(shipped)} (`octbench init` copies them into a folder to edit)."
    )


def load_suite(path: str | Path, overrides: list[str] = ()) -> tuple[Suite, str]:
    """Parse, override and validate a suite file. Returns the suite and the text as written."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError(f"suite file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"cannot read suite file {path}: {exc}") from None
    return parse_suite(text, source=str(path), overrides=overrides), text


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key repeated in one mapping is an error, not a silent override."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"key {shown(key)} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _count_values(value: Any, limit: int) -> int:
    """Values in a parsed suite, counted as if YAML aliases were copied out; stops past ``limit``."""
    count, stack = 0, [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
            stack.extend(item.keys())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def parse_suite(text: str, *, source: str = "<suite>", overrides: list[str] = ()) -> Suite:
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(f"{where}: malformed YAML: {problem}. Fix the syntax at that line.") from None
    if not isinstance(raw, dict):
        raise SuiteError(f"{source}: a suite is a YAML mapping with at least 'name' and 'variants' or 'ablation'.")
    if _count_values(raw, MAX_NODES) > MAX_NODES:
        raise SuiteError(
            f"{source}: the suite holds more than {MAX_NODES:,} values once its YAML aliases are expanded; "
            "a suite that large is a mistake (or an alias bomb)."
        )
    for override in overrides:
        apply_override(raw, override)
    try:
        return Suite.model_validate(raw)
    except ValidationError as exc:
        raise SuiteError(describe_suite_error(exc, text, source)) from None


def apply_override(raw: dict[str, Any], override: str) -> None:
    """``--set a.b.c=value``: value parsed as YAML, so numbers, booleans and lists keep their type."""
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise SuiteError(f"--set expects KEY=VALUE (e.g. dataset.name=breastmnist); got {override!r}.")
    parts = key.strip().split(".")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict):
            if isinstance(node.get(part), str) and i == len(parts) - 2:
                node[part] = {"name": node[part]}  # dataset: octmnist  ->  dataset: {name: octmnist}
            node = node.setdefault(part, {})
        else:
            raise SuiteError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is not a mapping or list index.")
    last = parts[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = parsed
    elif isinstance(node, dict):
        node[last] = parsed
    else:
        raise SuiteError(f"--set {key}: cannot set '{last}' there.")


def describe_suite_error(exc: ValidationError, text: str, source: str) -> str:
    lines = []
    for err in exc.errors()[:5]:
        loc = [p for p in err["loc"] if not str(p).startswith("function-")]
        path = format_location(loc)
        line = yaml_line(text, loc)
        where = f"{source}:{line}" if line else source
        msg = err["msg"].replace("Value error, ", "")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling and where it is indented)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"{where}: {path or 'suite'}: {msg}")
    more = len(exc.errors()) - 5
    return "invalid suite:\n  " + "\n  ".join(lines) + (f"\n  (and {more} more)" if more > 0 else "")


def format_location(loc: list[Any] | tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def yaml_line(text: str, loc: list[Any] | tuple[Any, ...]) -> int | None:
    """1-based line of the deepest part of ``loc`` present in the YAML text, if any."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
