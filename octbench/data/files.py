"""Fetching and verifying data files: nothing half-written ever sits where a loader would read it.

A download streams into a temporary file beside its destination while its MD5 is computed, and is renamed into
place only when the checksum matches. Files found locally are checked too; a verified file is remembered by
path, size and modification time (in the cache directory) so the check is not repeated every run.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from octbench.errors import DataError

CHUNK = 1 << 20
# a download that brings fewer than MIN_RATE bytes/s over STALL_SECONDS is abandoned (a server dripping a byte at a
# time would otherwise hold `data fetch` for ever: each read returns well within the socket timeout)
MIN_RATE = 1024
STALL_SECONDS = 30.0
# a partial download untouched this long was left by a killed process, not one still downloading
STALE_PART_SECONDS = 600.0


def cache_dir() -> Path:
    """``OCTBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/octbench``, else ``~/.cache/octbench``."""
    explicit = os.environ.get("OCTBENCH_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "octbench"


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _ledger_path() -> Path:
    return cache_dir() / "verified.json"


def _read_ledger() -> dict[str, dict]:
    try:
        return json.loads(_ledger_path().read_text())
    except (OSError, ValueError):
        return {}


def _remember(path: Path, md5: str) -> None:
    stat = path.stat()
    ledger = _read_ledger()
    ledger[str(path.resolve())] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "md5": md5}
    with contextlib.suppress(OSError):  # a read-only cache only costs a repeated check
        write_atomically(_ledger_path(), json.dumps(ledger, indent=1).encode())


def verified_md5(path: Path, expected: str | None = None, *, fix: str = "") -> str:
    """The file's MD5, trusted from the ledger when size and mtime are unchanged. Raises if it is not ``expected``."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror}. {fix}".strip()) from None
    known = _read_ledger().get(str(path.resolve()))
    if known and known["size"] == stat.st_size and known["mtime_ns"] == stat.st_mtime_ns:
        md5 = known["md5"]
    else:
        try:
            md5 = md5_of(path)
        except OSError as exc:
            raise DataError(f"cannot read data file {path}: {exc.strerror}. {fix}".strip()) from None
        if expected is None or md5 == expected:
            _remember(path, md5)
    if expected is not None and md5 != expected:
        raise DataError(
            f"data file {path} has MD5 {md5}, expected {expected}: it is corrupt, truncated or another release. "
            f"{fix}".strip()
        )
    return md5


def _default_mode() -> int:
    """What a plainly created file would get (mkstemp makes files private)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def download(
    url: str,
    destination: Path,
    md5: str,
    *,
    fix: str = "",
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Stream ``url`` to ``destination``, checking ``md5``; on any failure nothing is left at ``destination``.

    ``progress(done_bytes, total_bytes_or_None)`` is called as bytes arrive.
    """
    created = not destination.parent.exists()
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_parts(destination)
        fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    except OSError as exc:
        raise DataError(f"cannot write to {destination.parent}: {exc.strerror}. {fix}".strip()) from None
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            done, window_start, window_bytes = 0, time.monotonic(), 0
            while chunk := response.read1(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                window_bytes += len(chunk)
                if progress:
                    progress(done, total)
                elapsed = time.monotonic() - window_start
                if elapsed >= STALL_SECONDS:
                    if window_bytes < MIN_RATE * elapsed:
                        raise DataError(
                            f"download of {url} stalled ({window_bytes} bytes in the last {elapsed:.0f} s). "
                            f"Nothing was saved. {fix}".strip()
                        )
                    window_start, window_bytes = time.monotonic(), 0
            if total is not None and done != total:
                raise DataError(
                    f"download of {url} ended after {done} of {total} bytes. Nothing was saved. {fix}".strip()
                )
        got = digest.hexdigest()
        if got != md5:
            raise DataError(
                f"download of {url} has MD5 {got}, expected {md5}: the transfer was corrupted or the file "
                f"changed upstream. Nothing was saved. {fix}".strip()
            )
        os.chmod(tmp, _default_mode())
        os.replace(tmp, destination)
    except DataError:
        _discard(tmp, destination.parent if created else None)
        raise
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as exc:
        _discard(tmp, destination.parent if created else None)
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        raise DataError(f"download of {url} failed: {reason}. Nothing was saved. {fix}".strip()) from None
    except BaseException:
        _discard(tmp, destination.parent if created else None)
        raise
    _remember(destination, md5)
    return destination


def _remove_stale_parts(destination: Path) -> None:
    for leftover in destination.parent.glob(f".{destination.name}.*.part"):
        with contextlib.suppress(OSError):
            if time.time() - leftover.stat().st_mtime > STALE_PART_SECONDS:
                leftover.unlink()


def _discard(tmp: str, created_folder: Path | None = None) -> None:
    """Remove the partial file, and the folder too when this download created it (and it is empty)."""
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    if created_folder is not None:
        with contextlib.suppress(OSError):
            created_folder.rmdir()
