"""Choices that depend on the machine, measured rather than assumed, once per machine and remembered.

- **Precision** on a CPU: bf16 autocast against float32, both channels-last, timed for a few training steps of the
  suite's model at its batch size (as cuDNN's benchmark mode times kernels). bf16 is not always faster: on an
  Intel Xeon with AVX512-BF16 but no AMX the seed CNN trained at 2,493 images/s in bf16 against 3,190 in float32 at
  batch 64, while an AMX Xeon ran bf16 1.4-2x faster. On CUDA, bf16 where the GPU supports it (Ampere on).
- **How many cells to stack and run at once** (``executor: {stack: auto, parallel: auto}``).

A measured choice is stored in ``$OCTBENCH_CACHE_DIR/tuning.json`` under the model, batch size, device, threads and
torch version, so every later run on this machine makes the same choice (and so repeats exactly).
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from typing import Any

import torch

from octbench.data.files import cache_dir, write_atomically
from octbench.device import describe
from octbench.suite import Suite, Train, canonical_json
from octbench.train import as_float, autocast, bf16_native, make_optimizer

TRIAL_SECONDS = 0.4
# a stack shares one batched computation; past this many members a GPU gains little (the prototype's peak was 45)
MOST_STACKED = 48


def _path():
    return cache_dir() / "tuning.json"


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


def precision(config: Train, model: torch.nn.Module, image: tuple[int, int, int], num_classes: int, device) -> str:
    """'bf16' or 'fp32' for this model, batch size and device: the suite's choice, else the faster one measured."""
    chosen = config.precision
    if chosen != "auto":
        return chosen
    if not bf16_native(device):
        return "fp32"
    if device.type != "cpu":
        return "bf16"
    key = canonical_json(
        ["precision", repr(model), image, num_classes, config.batch_size, describe(device), torch.__version__]
    )
    found = _remembered().get(key)
    if found is None:
        speeds = {
            name: _images_per_s(model, image, num_classes, config, device, name == "bf16") for name in ("bf16", "fp32")
        }
        found = {"choice": max(speeds, key=speeds.get), "images_per_s": speeds}
        _remember(key, found)
    return found["choice"]


def _images_per_s(model: torch.nn.Module, image, num_classes: int, config, device, bf16: bool) -> float:
    trial = copy.deepcopy(model).to(device).to(memory_format=torch.channels_last).train()
    optimizer = make_optimizer(trial, config.optimizer.model_dump(), device)
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randint(0, 256, (config.batch_size, *image), generator=generator, device=device, dtype=torch.uint8)
    y = torch.randint(0, num_classes, (config.batch_size,), generator=generator, device=device)

    def step() -> None:
        with autocast(device, bf16):
            loss = torch.nn.functional.cross_entropy(trial(as_float(x, True)).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < TRIAL_SECONDS:
        step()
        steps += 1
    return steps * config.batch_size / (time.perf_counter() - start)


def executor(suite: Suite, device, cells: int) -> dict[str, Any]:
    """How many cells to stack into one computation and how many worker processes to run, with why.

    A GPU is launch-bound by one small model at batch 64, so cells stack (up to ``MOST_STACKED``) in one process.
    On a CPU the cores are the limit: stacking still saves per-step overhead (measured on 2 cores, seed CNN, bf16:
    4 stacked cells 3,686 images/s against 2,359 for one), and more processes than cores only compete.
    """
    stack, parallel = suite.executor.stack, suite.executor.parallel
    why = []
    if stack == "auto":
        stack = max(1, min(cells, MOST_STACKED if device.type == "cuda" else 8))
        reason = "a GPU fills only with many cells at once" if device.type == "cuda" else "fewer steps per image"
        why.append(f"stack {stack}: {reason}")
    if parallel == "auto":
        parallel = 1
        why.append("parallel 1: one process feeds the device; stacking does the sharing")
    return {"stack": int(stack), "parallel": int(parallel), "why": "; ".join(why)}
