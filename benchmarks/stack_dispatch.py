"""Operators one training step of a stack dispatches, by stack size (what bounds a GPU at small batches: every
operator costs host time, whatever the GPU does).

    python benchmarks/stack_dispatch.py                         # seed CNN, batch 64, stacks of 1, 4, 16 and 45
    python benchmarks/stack_dispatch.py --sizes 1 45 --batch 32

Counts, with torch.profiler, every operator recorded inside octbench's step (``octbench.step``): the direct ones
(gather, forward, loss, backward, optimizer update) and all of them, nested calls included. Prints a table and a
final JSON line. No augmenter or regularizer: a plugin's own hook is not the trainer's cost.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from octbench.cell.stack_train import STEP, Stack
from octbench.cell.train import Learner
from octbench.plugins import PluginHost
from octbench.suite import Train


def count(size: int, batch: int, steps: int, device: torch.device) -> dict[str, float]:
    host = PluginHost.load()
    config = Train(batch_size=batch, device=str(device), precision="fp32")
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch * steps, 1, 28, 28), dtype=torch.uint8, generator=generator).to(device)
    labels = (torch.arange(batch * steps) % 4).to(device)
    learners = [
        Learner(host.create("model", "seed-cnn", {}).build(1, 4, 28).to(device), (images, labels),
                (images[:batch], labels[:batch]), config=config, epochs=1, augmenters=[], regularizers=[], seed=seed,
                num_classes=4)
        for seed in range(size)
    ]  # fmt: skip
    stack = Stack(learners)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        start = time.perf_counter()
        stack.train(1)
        seconds = time.perf_counter() - start
    events = profile.events()
    marks = [e for e in events if e.name == STEP]
    spans = [e.time_range for e in marks]
    inside = [e for e in events if e.name != STEP and any(s.start <= e.time_range.start <= s.end for s in spans)]
    direct = [e for e in inside if e.cpu_parent is not None and e.cpu_parent.name == STEP]
    return {
        "members": size,
        "steps": len(marks),
        "direct_per_step": len(direct) / len(marks),
        "all_per_step": len(inside) / len(marks),
        "seconds_per_step_profiled": seconds / len(marks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 45])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = [count(size, args.batch, args.steps, device) for size in args.sizes]
    print(f"{'members':>8} {'direct/step':>12} {'all/step':>10}")
    for row in rows:
        print(f"{row['members']:>8} {row['direct_per_step']:>12.1f} {row['all_per_step']:>10.1f}")
    growth = rows[-1]["all_per_step"] / rows[0]["all_per_step"] - 1
    print(f"growth from {rows[0]['members']} to {rows[-1]['members']} members: {growth:+.1%}")
    print(json.dumps({"device": str(device), "batch": args.batch, "rows": rows, "growth": growth}))


if __name__ == "__main__":
    main()
