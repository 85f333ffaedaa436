"""One run per results folder: an exclusive lock held for the whole run, released by the kernel if the process dies.

The lock is ``flock`` on ``<out>/.octbench.lock``; the file holds the holder's pid, host and start time, so a second
run (or a ``--fresh``) into a busy folder can say who holds it. A lock left by a killed process is not stale: the
kernel released it when the process died.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from octbench.errors import OctbenchError
from octbench.store import now

LOCK_NAME = ".octbench.lock"


def ensure_free(folder: Path) -> None:
    """Fail at once when another run holds ``folder``, before a run loads data or tries its variants; writes
    nothing. ``folder_lock`` still takes the lock itself (a run may start in between)."""
    try:
        handle = open(folder / LOCK_NAME)  # noqa: SIM115 - closed below, which releases the probe
    except OSError:
        return  # no lock file yet, or an unreadable folder, which folder_lock reports
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(folder, handle) from None


@contextlib.contextmanager
def folder_lock(folder: Path, command: str) -> Iterator[None]:
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - held open for the duration of the run
    except OSError as exc:
        raise OctbenchError(f"cannot write to {folder}: {exc.strerror}. Choose a writable --out.") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(folder, handle) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": now(), "command": command})
        )
        handle.flush()
        yield
    finally:
        handle.close()


def _busy(folder: Path, handle) -> OctbenchError:
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "{}")
    except ValueError:
        holder = {}
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('started', '?')}"
    return OctbenchError(
        f"{folder} is in use by another octbench run ({who}: {holder.get('command', '?')}). "
        "Wait for it to finish, stop it, or use another --out."
    )
