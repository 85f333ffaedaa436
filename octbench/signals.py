"""SIGTERM handled like Ctrl-C: it raises ``Interrupted`` in the main thread, so every ``finally`` runs (partial
files are removed, a run is marked interrupted and its report written) instead of the process vanishing."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from octbench.errors import Interrupted


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
