"""Cells in worker processes, one at a time per worker, so the parent always knows which cell each worker holds.

That is what lets a worker killed by the kernel (out of memory) or a cell stuck past its time limit be recorded
as a failed cell while the suite goes on with a fresh worker, which ``concurrent.futures`` cannot do (one dead
worker breaks its whole pool, and it cannot say which cell died). Workers ignore Ctrl-C (the parent stops them
and says so once) and die with the parent (Linux ``PR_SET_PDEATHSIG``), so a killed run leaves no orphans.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from octbench.cell.execute import CellResult, CellTask, execute_stack, failed_result

# a cell still running this long after its train.timeout is stuck outside training: its worker is killed
HARD_TIMEOUT_GRACE = 60.0
# a fresh worker's first message: its interpreter and imports are ready, so its stack's clock starts now
_READY = "ready"


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _serve(connection: Connection, threads: int, parent: int) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import torch

    torch.set_num_threads(threads)
    connection.send(_READY)
    while True:
        try:
            task = connection.recv()
        except EOFError:
            return
        if task is None:
            return
        connection.send(execute_stack(task))


@contextlib.contextmanager
def _sigint_ignored():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class _Worker:
    process: Any
    connection: Connection
    stack: list[CellTask] | None = None  # the cells it is training
    ready: bool = False  # its interpreter has started and imported torch
    started: float | None = None  # when its stack's time limit began: once ready, not while it imports


def death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (the kernel's out-of-memory killer sends it when memory runs out)" if name == "SIGKILL" else ""
        return f"the worker process running this cell was killed by {name}{hint}"
    return f"the worker process running this cell exited with code {exitcode} before returning a result"


class WorkerPool:
    """``workers`` processes (spawned, ``threads`` torch threads each) that run stacks of cells (lists of tasks,
    ``octbench.cell.execute.execute_stack``) and hand back their results."""

    def __init__(self, workers: int, threads: int) -> None:
        self.workers = workers
        self.threads = threads
        self.context = multiprocessing.get_context("spawn")
        self.pool: list[_Worker] = []

    def _start(self) -> _Worker:
        parent_end, child_end = self.context.Pipe()
        process = self.context.Process(
            target=_serve, args=(child_end, self.threads, os.getpid()), name="octbench-worker", daemon=True
        )
        with _sigint_ignored():  # inherited by the new interpreter, so a Ctrl-C while it starts prints nothing
            process.start()
        child_end.close()
        return _Worker(process, parent_end)

    def run(self, tasks: Iterable[list[CellTask]], on_result: Callable[[CellResult], None]) -> None:
        """Run every stack, calling ``on_result`` in the parent for each cell as its stack finishes (or fails, or its
        worker dies: then every cell of the stack is recorded as failed with why)."""
        self.queue = queue = deque(tasks)
        try:
            while queue or any(w.stack is not None for w in self.pool):
                self._dispatch(queue)
                busy = [w for w in self.pool if w.stack is not None]
                ready = wait([w.connection for w in busy] + [w.process.sentinel for w in busy], timeout=1.0)
                for worker in busy:
                    if worker.connection in ready or worker.process.sentinel in ready:
                        self._collect(worker, on_result)
                self._enforce_time_limits(on_result)
        finally:
            self.close()

    def _dispatch(self, queue: deque[list[CellTask]]) -> None:
        while queue:
            idle = next((w for w in self.pool if w.stack is None), None)
            if idle is None:
                if len(self.pool) >= self.workers:
                    return
                idle = self._start()
                self.pool.append(idle)
            idle.stack = queue.popleft()
            idle.started = time.monotonic() if idle.ready else None
            idle.connection.send(idle.stack)

    def _collect(self, worker: _Worker, on_result: Callable[[CellResult], None]) -> None:
        stack = worker.stack
        results = None
        if worker.connection.poll():
            with contextlib.suppress(EOFError, OSError):
                results = worker.connection.recv()
        if isinstance(results, str) and results == _READY:
            worker.ready, worker.started = True, time.monotonic()
            return
        if results is None:  # the process died (or its pipe broke) without a result
            worker.process.join(timeout=5)
            self._replace(worker)
            if len(stack) > 1:  # which cell killed it is unknown: each runs again alone, so only that one fails
                self.queue.extend([task] for task in stack)
                return
            results = [failed_result(task, death_reason(worker.process.exitcode)) for task in stack]
        else:
            worker.stack = None
        for result in results:
            on_result(result)

    def _enforce_time_limits(self, on_result: Callable[[CellResult], None]) -> None:
        for worker in [w for w in self.pool if w.stack is not None and w.started is not None]:
            limit = worker.stack[0].suite.train.timeout
            # each cell has its own limit and a stack's cells take their turns (a search each, then one training):
            # the stack as a whole can take the sum of its cells' limits
            if limit is not None and time.monotonic() - worker.started > limit * len(worker.stack) + HARD_TIMEOUT_GRACE:
                worker.process.kill()
                worker.process.join(timeout=5)
                reason = (
                    f"the cell ran past train.timeout ({limit:g} s) by more than {HARD_TIMEOUT_GRACE:g} s outside "
                    "the training loop (a plugin stuck in fit or build?); its worker process was killed"
                )
                for task in worker.stack:
                    on_result(failed_result(task, reason))
                self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        worker.connection.close()
        self.pool.remove(worker)

    def close(self) -> None:
        """Stop every worker: politely if idle, by force if busy (an interrupted run does not wait for cells)."""
        for worker in self.pool:
            with contextlib.suppress(OSError, ValueError):
                if worker.stack is None:
                    worker.connection.send(None)
                else:
                    worker.process.terminate()
        deadline = time.monotonic() + 10
        for worker in self.pool:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()
        self.pool = []
