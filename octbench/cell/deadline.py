"""Time limits that hold wherever a cell hangs: in training, in a plugin's hook, in preprocessing.

The training loop checks ``train.timeout`` between steps, which cannot stop a plugin that never returns from
``configure_model`` or ``fit``. ``time_limit`` raises ``TimeLimitExceeded`` in the main thread when the time is up,
wherever Python code is running (a signal handler runs between any two bytecodes, and interrupts a sleep or a
lock wait), and again every second until the block ends, so a plugin that swallows it cannot keep the cell. Code
that never returns to Python (a hung C extension, or one that blocks signals) is out of its reach: that is why a
cell with a time limit runs in a worker process, which its parent kills (``octbench.cell.workers``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

# after the first alarm, how often it is raised again until the limited block has ended
REPEAT = 1.0


class TimeLimitExceeded(BaseException):
    """The time is up. A BaseException, like KeyboardInterrupt, so a plugin's ``except Exception`` cannot keep it."""

    def __init__(self, seconds: float, where: str) -> None:
        super().__init__(seconds, where)
        self.seconds, self.where = seconds, where


def can_limit() -> bool:
    """Whether ``time_limit`` works here: only the main thread receives signals, and Windows has no SIGALRM."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``TimeLimitExceeded`` in this block after ``seconds`` (no limit for None, or where ``can_limit`` is
    false). Any alarm set before is replaced for the block's duration."""
    if not seconds or not can_limit():
        yield
        return
    active = True

    def alarm(signum: int, frame: FrameType | None) -> None:
        if active:
            raise TimeLimitExceeded(seconds, where(frame))

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds, REPEAT)
    try:
        yield
    finally:
        active = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def where(frame: FrameType | None) -> str:
    """'configure_model (my_plugins.py:12)': the innermost Python function that was running when time ran out."""
    if frame is None:
        return "an unknown place"
    code = frame.f_code
    return f"{code.co_name} ({os.path.basename(code.co_filename)}:{frame.f_lineno})"
