"""Choices that depend on the machine, measured rather than assumed, once per machine and remembered.

- **Precision** on a CPU: bf16 autocast against float32, both channels-last, timed for a few training steps of the
  suite's model at its batch size (as cuDNN's benchmark mode times kernels), through the step cells run. bf16 is
  not always faster: without AMX it lost to float32 at batch 64, with AMX it won (docs/benchmarks.md, section 9).
  On CUDA, bf16 where the GPU supports it (Ampere on).
- **How many cells to stack and run at once** (``executor: {stack: auto, parallel: auto}``).

A measured choice is stored in ``$OCTBENCH_CACHE_DIR/tuning.json`` (or ``$OCTBENCH_TUNING_FILE``) under the model,
batch size, device, threads and torch version, so every later run on this machine makes the same choice (and so
repeats exactly); share the file to make several machines choose alike.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from octbench.cell.device import cpu_model, describe
from octbench.cell.stack_train import Stack
from octbench.cell.train import Learner, alone_because, alone_images_per_s, bf16_native, fast_path
from octbench.data.files import cache_dir, write_atomically
from octbench.suite import Suite, Train, canonical_json

TRIAL_SECONDS = 0.25
PRECISIONS = ("bf16", "fp32")
# bf16 is chosen only when clearly faster: a model too small to gain mostly gets float32 rather than whichever a noisy
# trial favours (figures: docs/benchmarks.md, section 9). A model near the margin (the tests' tiny CNN on some CPUs)
# can get either; the choice is remembered, so the runs of one machine agree
BF16_MARGIN = 1.2
# a stack shares one batched computation; past this many members a GPU gains little (the prototype's peak was 45)
MOST_STACKED = 48
#: the stack sizes a GPU's trial times; the smallest within STACK_MARGIN of the fastest is chosen (a smaller stack
#: holds less memory and loses fewer cells to one failure)
STACK_SIZES = (1, 4, 12, 24, 48)
STACK_MARGIN = 0.95
#: whole-step CUDA graphs (issue 19, part 3) are not built yet: every step runs eager
GRAPHS = (False, "whole-step CUDA graphs are not built yet; every step runs eager")


def _path() -> Path:
    """``$OCTBENCH_TUNING_FILE``, else ``tuning.json`` in octbench's cache folder."""
    explicit = os.environ.get("OCTBENCH_TUNING_FILE")
    return Path(explicit) if explicit else cache_dir() / "tuning.json"


def _remembered() -> dict[str, Any]:
    try:
        return json.loads(_path().read_text())
    except (OSError, ValueError):
        return {}


def _remember(key: str, value: Any) -> None:
    table = _remembered()
    table[key] = value
    with contextlib.suppress(OSError):  # a read-only cache only costs measuring again
        write_atomically(_path(), json.dumps(table, indent=1).encode())


def machine(device) -> str:
    """The device, without the process's current thread count (``describe`` has it): the same key in every process."""
    if device.type == "cuda":
        return describe(device)
    return f"cpu: {cpu_model()} x {os.cpu_count()}"


def precision(
    config: Train, name: str, model: torch.nn.Module, image: tuple[int, int, int], num_classes: int, device
) -> str:
    """'bf16' or 'fp32' for the model plugin ``name`` (``model`` one of its instances), the batch size and the
    device: the suite's choice, else the faster one measured."""
    chosen = config.precision
    if chosen != "auto":
        return chosen
    if not bf16_native(device):
        return "fp32"
    if device.type != "cpu":
        return "bf16"
    # keyed by the model plugin, not its exact widths: which precision wins depends on the CPU's bf16 units far
    # more than on a layer's size, and one trial per kind keeps a suite's start-up short
    key = canonical_json(
        ["precision", name, image, num_classes, config.batch_size, machine(device), config.threads, torch.__version__]
    )
    found = _remembered().get(key)
    if found is None:
        # the best of two interleaved rounds each, so one noisy moment does not decide
        rounds = [
            {name: _images_per_s(model, image, num_classes, config, device, name == "bf16") for name in PRECISIONS}
            for _ in range(2)
        ]
        speeds = {name: max(r[name] for r in rounds) for name in PRECISIONS}
        choice = "bf16" if speeds["bf16"] >= BF16_MARGIN * speeds["fp32"] else "fp32"
        found = {"choice": choice, "images_per_s": speeds}
        _remember(key, found)
    return found["choice"]


def _images_per_s(model: torch.nn.Module, image, num_classes: int, config, device, bf16: bool) -> float:
    """The precision trial: one cell's training step, in bf16 or float32 (``_trial``)."""
    return _trial(model, 1, image, num_classes, config, device, fast=(bf16, fast_path(config, device)[1]))


def stack_size(
    config: Train, name: str, model: torch.nn.Module, image: tuple[int, int, int], num_classes: int, device
) -> dict[str, Any]:
    """The stack size that trained fastest in a short trial of the model plugin ``name`` (``model`` one of its
    instances) at the suite's batch size on ``device``: {"choice": size, "images_per_s": {size: summed speed}},
    measured once per machine and remembered like the precision."""
    key = canonical_json(
        ["stack", name, image, num_classes, config.batch_size, config.precision, machine(device), torch.__version__]
    )
    found = _remembered().get(key)
    if found is None:
        speeds = {size: _stack_images_per_s(model, size, image, num_classes, config, device) for size in STACK_SIZES}
        best = max(speeds.values())
        found = {"choice": min(s for s, v in speeds.items() if v >= STACK_MARGIN * best), "images_per_s": speeds}
        _remember(key, found)
    return found


def _stack_images_per_s(model: torch.nn.Module, size: int, image, num_classes: int, config: Train, device) -> float:
    """The stack-size trial: ``size`` cells' training step as one stack (``_trial``)."""
    return _trial(model, size, image, num_classes, config, device)


def _trial(model: torch.nn.Module, size: int, image, num_classes: int, config: Train, device, fast=None) -> float:
    """Training images per second (summed over ``size`` copies of ``model``) through the step cells run: a
    stack (``octbench.cell.stack_train``), or for a model that cannot be stacked the step it trains alone with, on
    random uint8 images at the suite's batch size, for about ``TRIAL_SECONDS`` after two warm-up steps."""
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randint(0, 256, (config.batch_size, *image), generator=generator, device=device, dtype=torch.uint8)
    y = torch.randint(0, num_classes, (config.batch_size,), generator=generator, device=device)
    learners = [
        Learner(copy.deepcopy(model).to(device), (x, y), (x, y), config=config, epochs=1, augmenters=[],
                regularizers=[], seed=seed, num_classes=num_classes, fast=fast)
        for seed in range(size)
    ]  # fmt: skip
    if size == 1 and alone_because(learners[0]) is not None:
        return alone_images_per_s(learners[0], TRIAL_SECONDS)
    return Stack(learners).images_per_s(TRIAL_SECONDS)


@dataclass(frozen=True)
class Execution:
    """How a run's cells execute: recorded in the provenance under ``executor``."""

    name: str  # the executor plugin
    stack: int  # cells trained as one computation
    parallel: int  # stacks the executor runs at once
    threads: int  # CPU threads each cell gets
    graphs: bool  # whether steps run as CUDA graphs
    why: str


def execution(suite: Suite, runner: Any, device, cells: int, measure: Any = None) -> Execution:
    """How many cells to stack into one computation, how many stacks the executor runs at once, the CPU threads
    each cell gets, whether steps run as CUDA graphs, and why.

    A GPU is launch-bound by one small model at batch 64, so cells stack there: ``measure(most)`` times the suite's
    model at a few stack sizes (``stack_size``) and gives (size, why); without it, as many as ``MOST_STACKED``. A
    CPU is bound by arithmetic, and stacking gained nothing clear there (docs/benchmarks.md, section 6), so a CPU
    stacks 1.
    """
    stack = suite.executor.stack
    why = []
    if stack == "auto":
        most = max(1, min(cells, MOST_STACKED))
        if device.type == "cuda" and measure is not None:
            stack, reason = measure(most)
            why.append(f"stack {stack}: {reason}")
        elif device.type == "cuda":
            stack = most
            why.append(f"stack {stack}: one small model cannot fill a GPU")
        else:
            stack = 1
            why.append("stack 1: on a CPU the arithmetic is the limit and stacking gains nothing measurable")
    graphs, graphs_why = GRAPHS
    why.append(f"CUDA graphs {'on' if graphs else 'off'}: {graphs_why}")
    stacks = -(-cells // int(stack)) if cells else 0
    parallel, reason = runner.parallelism(str(device), stacks)
    why.append(f"{runner.name} runs {parallel} at once: {reason}")
    # CPU results depend on the thread count (reduction order), so every cell gets the same number of threads
    # wherever it runs: train.threads, else torch's default on the driver
    threads = suite.train.threads or runner.threads_per_cell() or torch.get_num_threads()
    return Execution(runner.name, int(stack), int(parallel), threads, graphs, "; ".join(why))
