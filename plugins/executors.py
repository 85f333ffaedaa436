"""The local executor: stacks of cells one after another in this process, or in worker processes on this machine."""

from __future__ import annotations

import os
from typing import Literal

import torch
from pydantic import Field
from rich.markup import escape

from octbench import hookimpl
from octbench.cell import CellResult, execute_stack
from octbench.cell.workers import WorkerPool
from octbench.console import console, task_progress
from octbench.params import Params
from octbench.technique import Executor, RunContext


def oversubscription(parallel: int, threads: int, device: str) -> str | None:
    """Why ``parallel`` cells of ``threads`` CPU threads each would compete for this machine's cores, if they do."""
    cores = os.cpu_count() or 1
    if not device.startswith("cpu") or parallel * threads <= cores:
        return None
    return (
        f"{parallel} cells at once with {threads} threads each on {cores} CPU cores: they will compete for the cores "
        f"(2 cells x 2 threads on 2 cores ran the smoke suite 3.6x slower than one at a time); "
        f"set train.threads to {max(1, cores // parallel)}"
    )


class Local(Executor):
    """This machine: stacks one after another in this process, or ``parallel`` worker processes. With a
    ``train.timeout``, even one stack at a time runs in a worker process: a cell stuck where no signal reaches it (a
    hung C extension) can only be stopped by killing its process (``octbench.cell.workers``)."""

    name = "local"

    class Params(Params):
        parallel: int | Literal["auto"] = Field(
            "auto",
            description="worker processes, each running stacks with train.threads threads (auto: 1, in this "
            "process unless train.timeout is set: a cell that can be stopped wherever it hangs runs in a worker)",
        )

    def parallelism(self, device: str, stacks: int) -> tuple[int, str]:
        if self.params.parallel != "auto":
            return self.params.parallel, "as asked"
        return 1, "one process feeds the device"

    def run(self, stacks, on_result, context: RunContext) -> None:
        workers, _ = self.parallelism(context.device, len(stacks))
        total = sum(len(stack) for stack in stacks)
        # a time limit holds wherever a cell hangs only if the cell can be killed: then it runs in a worker process
        limited = bool(stacks) and stacks[0][0].suite.train.timeout is not None
        if workers > 1 or limited:  # worker processes: even one stack runs in one, isolated from the driver
            warning = oversubscription(workers, context.threads, context.device)
            if warning:
                console.print(f"[yellow]warning:[/yellow] {warning}")
            with task_progress() as bars:
                cells = bars.add_task(
                    "cells",
                    total=total,
                    status=f"{workers} worker process{'es' if workers != 1 else ''}",
                    visible=context.progress,
                )

                def done(result: CellResult) -> None:
                    on_result(result)
                    status = escape(f"{result.variant} seed {result.seed} fold {result.fold}")
                    bars.update(cells, advance=1, status=status)

                WorkerPool(workers, context.threads).run(stacks, done)
            return
        torch.set_num_threads(context.threads)
        with task_progress() as bars:
            cells = bars.add_task("cells", total=total, status="", visible=context.progress)
            epochs = bars.add_task("epochs", total=None, status="", visible=False)
            for stack in stacks:
                first = stack[0]
                label = f"{first.variant.name} seed {first.seed} fold {first.fold}"
                more = f" and {len(stack) - 1} more" if len(stack) > 1 else ""
                bars.update(cells, status=escape(label + more))
                # a tuned cell trains each of its search's trials first (fewer where a killed run left some done)
                trials = sum(task.variant.tune.trials for task in stack if task.variant.tune is not None)
                total = first.suite.epochs * (1 + trials)
                bars.reset(epochs, total=total, visible=context.progress, status="")

                def on_epoch(logs, bars=bars, epochs=epochs):
                    status = f"val_loss {logs['val_loss']:.3f} val_acc {logs['val_acc']:.3f}"
                    bars.update(epochs, advance=1, status=status)

                for result in execute_stack(stack, context.host, on_epoch=on_epoch):
                    on_result(result)
                    bars.update(cells, advance=1)
            bars.update(epochs, visible=False)


@hookimpl
def register_executors(register):
    register(Local)
