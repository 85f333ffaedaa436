"""What ``octbench --help`` and ``octbench plugins`` show of the plugins, remembered per installation so that
neither imports them again (the built-in plugins import torch, albumentations, scikit-learn...).

The listing (every technique's name, kind, summary and parameters, the plugins' commands with their one-line help,
and the plugins that failed to import) is kept under the cache folder, keyed by a fingerprint of everything it is
read from: the ``octbench`` entry points and their distributions' versions, the size and modification time of every
Python file of octbench and of each plugin's package, ``OCTBENCH_PLUGINS`` and the other plugin variables, the
paths given, and the interpreter. Installing, upgrading or editing a plugin changes the fingerprint, and the next
command imports the plugins once and remembers the new listing.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import octbench
from octbench.data.files import cache_dir, write_atomically

VARIABLES = ("OCTBENCH_PLUGINS", "OCTBENCH_DISABLE_PLUGINS", "OCTBENCH_STRICT_PLUGINS")
KEEP = 8  # listings kept: a few environments (virtual environments, OCTBENCH_PLUGINS settings) side by side


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
    return [path] if path.exists() else []


def _package_dir(module: str) -> Path | None:
    """The folder of the top-level package holding ``module`` (the module's file for a lone module), unimported."""
    try:
        spec = importlib.util.find_spec(module.split(".")[0])
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    origin = Path(spec.origin)
    return origin.parent if origin.name == "__init__.py" else origin


def fingerprint(paths: Iterable[str | Path] = ()) -> str:
    """A digest of everything the listing is read from (see the module docstring)."""
    entries = sorted(
        (e.name, e.value, e.dist.name if e.dist else "", e.dist.version if e.dist else "")
        for e in importlib.metadata.entry_points(group="octbench")
    )
    sources = [Path(octbench.__file__).parent]
    sources += [d for e in entries if (d := _package_dir(e[1].split(":")[0])) is not None]
    listed = [p for v in os.environ.get("OCTBENCH_PLUGINS", "").replace(os.pathsep, ",").split(",") if (p := v.strip())]
    sources += [Path(p) for p in [*listed, *paths]]
    stats = []
    for source in sources:
        for file in _files(source):
            found = file.stat()
            stats.append((str(file), found.st_size, found.st_mtime_ns))
    state = {
        "entries": entries,
        "files": stats,
        "variables": [os.environ.get(v, "") for v in VARIABLES],
        "modules": listed,  # a module name in OCTBENCH_PLUGINS is no file: its name at least
        "python": [sys.executable, sys.version],
    }
    return hashlib.sha256(json.dumps(state, default=str).encode()).hexdigest()[:24]


def listing(core: dict[str, Any], paths: Iterable[str | Path] = ()) -> dict[str, Any]:
    """{plugins: rows, broken: [...], commands: {name: one-line help}} for ``octbench plugins`` and ``--help``;
    ``core`` holds octbench's own commands (name: click command), which a plugin may not replace."""
    paths = list(paths)
    path = cache_dir() / "listings" / f"{fingerprint(paths)}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    text = json.dumps(_read(core, paths), default=str)
    with contextlib.suppress(OSError):  # a read-only cache folder: list anyway, slower next time
        write_atomically(path, text.encode())
        for old in sorted(path.parent.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)[:-KEEP]:
            old.unlink(missing_ok=True)  # listings of earlier installations
    return json.loads(text)  # as a later command reads it, so both print the same


def _read(core: dict[str, Any], paths: list[str | Path]) -> dict[str, Any]:
    import click

    from octbench.params import describe_params
    from octbench.plugins import PluginHost, distribution_of

    host = PluginHost.load(paths)
    rows = []
    for reg in host.all():
        distribution, version = distribution_of(reg.cls)
        rows.append(
            {
                "name": reg.name,
                "kind": reg.kind,
                "summary": reg.cls.summary(),
                "parameters": describe_params(reg.cls.Params),
                "plugin": reg.plugin,
                "source": reg.source,
                "distribution": distribution,
                "version": version,
            }
        )
    probe = click.Group("octbench")
    probe.commands = dict(core)
    host.add_commands(probe)
    commands = {name: cmd.get_short_help_str(80) for name, cmd in probe.commands.items() if name not in core}
    return {"plugins": rows, "broken": [vars(b) for b in host.broken], "commands": commands}
