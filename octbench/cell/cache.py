"""On-disk cache of deterministic preprocessing and resampling results, keyed by content.

A key is a hash of everything the result depends on: the dataset (plugin, parameters, files' MD5), the subset of
it, the chain of techniques
with their parameters and a hash of each technique's source file (so editing a plugin invalidates its entries),
and for resampling the exact training indices and random state. Entries live under
``$OCTBENCH_CACHE_DIR/arrays`` (default ``~/.cache/octbench/arrays``); a process also keeps the last few in memory.
``OCTBENCH_NO_CACHE=1`` turns the cache off.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import os
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from octbench.data.files import cache_dir
from octbench.suite import canonical_json

MEMORY_ENTRIES = 4
_memory: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()


def enabled() -> bool:
    return os.environ.get("OCTBENCH_NO_CACHE", "") not in ("1", "true", "yes")


@functools.lru_cache(maxsize=256)
def source_hash(cls: type) -> str:
    """Hash of the file defining ``cls`` (its module's code), so cached results follow plugin edits."""
    try:
        path = inspect.getsourcefile(cls)
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12] if path else cls.__qualname__
    except (OSError, TypeError):
        return cls.__qualname__


def key(*parts: Any) -> str:
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:32]


def _path(kind: str, entry: str) -> Path:
    return cache_dir() / "arrays" / kind / f"{entry}.npz"


def get(kind: str, entry: str) -> dict[str, np.ndarray] | None:
    if not enabled():
        return None
    if entry in _memory:
        _memory.move_to_end(entry)
        return _memory[entry]
    path = _path(kind, entry)
    if not path.exists():
        return None
    try:  # opened here, so a damaged file is closed too (np.load leaks the handle of a file it cannot read)
        with open(path, "rb") as handle, np.load(handle) as stored:
            arrays = {k: stored[k] for k in stored.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error):
        # a damaged entry (a full disk, a kill mid-write on another file system) is recomputed, not trusted
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    _remember(entry, arrays)
    return arrays


def put(kind: str, entry: str, arrays: dict[str, np.ndarray]) -> None:
    if not enabled():
        return
    _remember(entry, arrays)
    path = _path(kind, entry)
    with contextlib.suppress(OSError):  # a full or read-only disk only costs recomputation
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)


def _remember(entry: str, arrays: dict[str, np.ndarray]) -> None:
    for array in arrays.values():  # shared by every later cell of the process: nobody may write into them
        array.setflags(write=False)
    _memory[entry] = arrays
    _memory.move_to_end(entry)
    while len(_memory) > MEMORY_ENTRIES:
        _memory.popitem(last=False)


def clear_memory() -> None:
    _memory.clear()
