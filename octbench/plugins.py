"""A thin typed facade over pluggy: load plugins, collect what they register, create techniques by name.

Plugins come from, in order: the ``octbench`` entry-point group (the built-ins live there too), paths or
modules listed in ``OCTBENCH_PLUGINS`` (separated by ``,`` or the OS path separator), and files or folders
named in a suite's ``plugins:`` list. ``OCTBENCH_DISABLE_PLUGINS`` names entry points not to load.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from octbench import hookspecs, kinds
from octbench.cell.cache import source_hash
from octbench.cell.metrics import SCALARS
from octbench.errors import PluginError
from octbench.params import closest_hint, validate_params
from octbench.technique import Technique

ENTRY_POINT_GROUP = "octbench"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class Registered:
    """One technique as registered: its class, kind and where it came from."""

    cls: type[Technique]
    kind: str
    plugin: str
    source: str

    @property
    def name(self) -> str:
        return self.cls.name


class PluginHost:
    """Every technique available in this process, by kind and name."""

    def __init__(self, manager: pluggy.PluginManager, broken: list[BrokenPlugin] | None = None) -> None:
        self.manager = manager
        self.broken = broken or []
        self._by_kind: dict[str, dict[str, Registered]] = {kind: {} for kind in kinds.kinds()}
        self._collect()

    @classmethod
    def load(cls, paths: Iterable[str | Path] = (), *, entry_points: bool = True) -> PluginHost:
        manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
        manager.add_hookspecs(hookspecs.every_hook())  # every kind's, including any added since import
        for name in _env_list("OCTBENCH_DISABLE_PLUGINS"):
            manager.set_blocked(name)
        broken = _load_entry_points(manager) if entry_points else []
        for target in [*_env_list("OCTBENCH_PLUGINS"), *paths]:
            for module in _import_target(target):
                if not manager.is_registered(module):
                    manager.register(module, name=module.__name__)
        try:
            manager.check_pending()
        except pluggy.PluginValidationError as exc:
            name = manager.get_name(exc.plugin) or exc.plugin
            raise PluginError(
                f"plugin '{name}': {exc}. The hooks octbench defines are: {', '.join(kinds.hook_kinds())}."
            ) from None
        return cls(manager, broken)

    def add_commands(self, group: Any) -> None:
        """Every plugin's ``register_commands`` on the click ``group``; a plugin that replaces one of the group's own
        commands is refused, naming it."""
        own = dict(group.commands)
        for impl in self.manager.hook.register_commands.get_hookimpls():
            try:
                impl.function(cli=group)
            except (Exception, SystemExit) as exc:
                raise PluginError(
                    f"plugin '{impl.plugin_name}' failed in register_commands: {type(exc).__name__}: {exc}"
                ) from None
            replaced = sorted(name for name, command in own.items() if group.commands.get(name) is not command)
            if replaced:
                group.commands.update(own)
                raise PluginError(
                    f"plugin '{impl.plugin_name}' registered a command named {', '.join(replaced)}, which octbench's "
                    "own command line uses: give it another name."
                )

    def _collect(self) -> None:
        for hook_attr, kind in kinds.hook_kinds().items():
            hook = getattr(self.manager.hook, hook_attr)
            for impl in hook.get_hookimpls():
                try:
                    impl.function(register=self._registrar(kind, impl.plugin_name, impl.plugin))
                except PluginError:
                    raise
                except (Exception, SystemExit) as exc:
                    raise PluginError(
                        f"plugin '{impl.plugin_name}' failed in {hook_attr}: {type(exc).__name__}: {exc}"
                    ) from None

    def _registrar(self, kind: str, plugin_name: str, plugin: Any):
        source = getattr(plugin, "__file__", None) or plugin_name

        def register(cls: Any) -> None:
            where = f"plugin '{plugin_name}' ({source})"
            bases = kinds.bases(kind)
            if not (inspect.isclass(cls) and issubclass(cls, bases)):
                wanted = " or ".join(b.__name__ for b in bases)
                raise PluginError(f"{where} registered {cls!r} as a {kind}, but it is not a subclass of {wanted}.")
            name = getattr(cls, "name", None)
            if not isinstance(name, str) or not NAME_PATTERN.match(name):
                raise PluginError(
                    f"{where} registered {cls.__name__} with name {name!r}: a name is lowercase letters, digits, "
                    "'-', '_' or '.', starting with a letter or digit."
                )
            if kind == "metric" and name in SCALARS:
                raise PluginError(f"{where} registered a metric named '{name}', which is one of octbench's own.")
            existing = self._by_kind[kind].get(name)
            if existing is not None:
                raise PluginError(
                    f"the {kind} name '{name}' is registered twice: by plugin '{existing.plugin}' "
                    f"({existing.source}) and by {where}. Rename one, or block one with OCTBENCH_DISABLE_PLUGINS."
                )
            self._by_kind[kind][name] = Registered(cls, kind, plugin_name, str(source))

        return register

    def names(self, kind: str) -> list[str]:
        return sorted(self._by_kind[kind])

    def all(self) -> list[Registered]:
        return [reg for kind in self._by_kind.values() for reg in sorted(kind.values(), key=lambda r: r.name)]

    def get(self, kind: str, name: str) -> Registered:
        found = self._by_kind[kind].get(name)
        if found is None:
            known = self.names(kind)
            hint = closest_hint(name, known)
            raise PluginError(
                f"unknown {kind} '{name}'{hint}. Registered {kind}s: {', '.join(known) or 'none'}. "
                "List everything with `octbench plugins`."
            )
        return found

    def create(self, kind: str, name: str, params: dict[str, Any] | None = None) -> Any:
        """A fresh, unfitted technique with validated parameters."""
        cls = self.get(kind, name).cls
        return cls(validate_params(cls.Params, name, dict(params or {})))

    def instances(self, kind: str) -> list[Any]:
        """A fresh instance of every registered technique of ``kind`` with its default parameters (metrics and report
        sections take part in every run once installed)."""
        return [
            reg.cls.from_config(reg.cls.example_params)
            for reg in sorted(self._by_kind[kind].values(), key=lambda r: r.name)
        ]

    def provenance(self, kind: str, name: str) -> dict[str, str]:
        """Where a technique's code came from: its plugin, file, installed distribution and version, and a hash of
        its source file (what a cell's configuration hash includes)."""
        found = self.get(kind, name)
        distribution, version = distribution_of(found.cls)
        return {
            "plugin": found.plugin,
            "source": found.source,
            "distribution": distribution,
            "version": version,
            "source_hash": source_hash(found.cls),
        }

    def check(self, kind: str, name: str, params: dict[str, Any] | None = None) -> None:
        """Validate a reference without building anything heavy (parameters only)."""
        cls = self.get(kind, name).cls
        validate_params(cls.Params, name, dict(params or {}))


@dataclass(frozen=True)
class BrokenPlugin:
    """An installed entry-point plugin that failed to import: skipped, and said so."""

    name: str
    distribution: str
    version: str
    error: str

    def __str__(self) -> str:
        return f"plugin '{self.name}' of {self.distribution} {self.version} failed to import ({self.error}); skipped"


_REPORTED: set[str] = set()


def warn_once(found: BrokenPlugin) -> None:
    """The warning for an entry point that failed to import, once per process."""
    if str(found) not in _REPORTED:
        _REPORTED.add(str(found))
        print(f"warning: {found}. Fix or uninstall it, or block it with OCTBENCH_DISABLE_PLUGINS.", file=sys.stderr)


def _load_entry_points(manager: pluggy.PluginManager) -> list[BrokenPlugin]:
    """Register every ``octbench`` entry point. One that fails to import is skipped with a warning naming its
    distribution, version and error, so one broken package cannot block every command; ``OCTBENCH_STRICT_PLUGINS=1``
    makes it an error instead (for CI)."""
    broken = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if manager.is_blocked(entry.name) or manager.get_plugin(entry.name) is not None:
            continue
        try:
            plugin = entry.load()
        except (Exception, SystemExit) as exc:
            distribution = entry.dist.name if entry.dist else "an unknown distribution"
            version = entry.dist.version if entry.dist else ""
            found = BrokenPlugin(
                entry.name, distribution, version, import_failure(exc, f"{type(exc).__name__}: {exc}")[:300]
            )
            if os.environ.get("OCTBENCH_STRICT_PLUGINS", "") not in ("", "0"):
                raise PluginError(f"{found} (OCTBENCH_STRICT_PLUGINS is set). Fix or uninstall it.") from None
            warn_once(found)
            broken.append(found)
            continue
        manager.register(plugin, name=entry.name)
    return broken


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.lru_cache(maxsize=1)
def default_host() -> PluginHost:
    """Entry-point plugins, loaded once per process: what code outside a run (benchmarks, the conformance kit, a
    direct ``octbench.cell.train.train`` call) builds optimizers from."""
    return PluginHost.load()


def distribution_of(cls: type) -> tuple[str, str]:
    """(distribution, version) that installed the module defining ``cls``, or ('', '') for a loose file."""
    names = _distributions().get(cls.__module__.split(".")[0], [])
    if not names:
        return "", ""
    try:
        return names[0], importlib.metadata.version(names[0])
    except importlib.metadata.PackageNotFoundError:
        return names[0], ""


def _env_list(variable: str) -> list[str]:
    raw = os.environ.get(variable, "")
    return [part.strip() for part in re.split(rf"[,{re.escape(os.pathsep)}]", raw) if part.strip()]


def _import_target(target: str | Path) -> list[ModuleType]:
    """A .py file, a folder of .py files, or an importable module name."""
    path = Path(target)
    if path.suffix == ".py" or path.is_dir() or os.sep in str(target):
        if path.is_dir():
            files = sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
            if not files:
                raise PluginError(f"plugin folder {path} holds no .py files.")
            return [_import_file(p) for p in files]
        if not path.is_file():
            raise PluginError(f"plugin file {path} does not exist.")
        return [_import_file(path)]
    try:
        return [importlib.import_module(str(target))]
    except (Exception, SystemExit) as exc:
        raise PluginError(f"could not import plugin module '{target}': {import_failure(exc, repr(exc))}") from None


def _import_file(path: Path) -> ModuleType:
    path = path.resolve()
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise PluginError(f"cannot read plugin file {path}: {exc.strerror}.") from None
    # the name follows the file's content, so an edited plugin is imported afresh, not served from sys.modules
    digest = hashlib.sha1(str(path).encode() + content).hexdigest()[:12]
    stem = re.sub(r"\W", "_", path.stem)
    module_name = f"octbench_user_plugin_{stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"could not load plugin file {path}.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # a plugin that exits while imported must not end octbench with 0
        del sys.modules[module_name]
        raise PluginError(f"plugin file {path} failed to import: {import_failure(exc, repr(exc))}") from None
    return module


def import_failure(exc: BaseException, otherwise: str) -> str:
    """What went wrong importing a plugin, for its author: its call to ``sys.exit``, or ``otherwise``."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r}) while being imported; a plugin registers techniques, it must not exit"
    return otherwise
