"""Wall time of suites/ablation.yaml on OCTMNIST-shaped synthetic data, split into stages, with the harness's
overhead (everything that is not training or evaluation compute) as a share of the wall time. The executor's
choice (cells stacked into one computation, worker processes) is printed; --stack and --parallel override it.
Cells trained as one stack share their training time, which counts once. With --parallel N the overhead is the
share of the workers' time (wall x N) not spent on training or evaluation compute, so idle workers count against it.

    python benchmarks/suite_wall.py                       # full size: 97,477 / 10,832 / 1,000 images (GPU)
    python benchmarks/suite_wall.py --parallel 8          # full size, 8 cells at once on one GPU
    python benchmarks/suite_wall.py --scale 0.05 --epochs 2 --folds 2   # a few minutes on 2 CPU cores

Prints a table and a final JSON line. Results go to a temporary folder unless --out is given. The array cache
starts empty (a first run) unless --cache-dir names one: run twice with the same --cache-dir to time a second run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

from octbench.report.collect import load
from octbench.runner import run_suite

SUITE = Path(__file__).resolve().parents[1] / "suites" / "ablation.yaml"
STAGES = ("load", "preprocess", "resample", "to_device", "train", "validate", "evaluate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of OCTMNIST's train and val sizes")
    parser.add_argument("--epochs", type=int, default=None, help="override the suite's epochs")
    parser.add_argument("--folds", type=int, default=None, help="override the suite's folds")
    parser.add_argument("--device", default=None)
    parser.add_argument("--parallel", type=int, default=None, help="worker processes (default: the executor's choice)")
    parser.add_argument("--stack", type=int, default=None, help="cells per stack (default: the executor's choice)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per cell (train.threads)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--cache-dir", default=None, help="reuse this array cache (default: a fresh, empty one)")
    args = parser.parse_args()

    n_train, n_val = max(64, int(97_477 * args.scale)), max(16, int(10_832 * args.scale))
    overrides = [
        f"dataset={{name: synthetic-oct, n_train: {n_train}, n_val: {n_val}, n_test: 1000}}",
    ]
    if args.parallel:
        overrides.append(f"executor.parallel={args.parallel}")
    if args.stack:
        overrides.append(f"executor.stack={args.stack}")
    if args.threads:
        overrides.append(f"train.threads={args.threads}")
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    if args.folds:
        overrides.append(f"cv.folds={args.folds}")
    out = Path(args.out or tempfile.mkdtemp(prefix="octbench-wall-"))
    os.environ["OCTBENCH_CACHE_DIR"] = args.cache_dir or tempfile.mkdtemp(prefix="octbench-wall-cache-")

    start = time.perf_counter()

    def stop(signum, frame) -> None:
        """A time limit (timeout's SIGTERM) still gets the partial figures, at once: waiting for the cells in
        flight to finish could outlast the limit's grace period."""
        _print_partial(out, time.perf_counter() - start)
        sys.stdout.flush()
        os._exit(1)

    signal.signal(signal.SIGTERM, stop)
    summary = run_suite(SUITE, out=out, device=args.device, overrides=overrides, fresh=True, progress=False)
    wall = time.perf_counter() - start

    results = load([out])
    timings = [cell.timings for variant in results.variants for cell in variant.cells]
    device = results.runs[0].provenance["device"]
    executor = results.runs[0].provenance.get("executor", {})
    workers = executor.get("parallel", 1)
    # a stack's members each record the stack's training time: it counts once, so each counts a share
    stages = {s: sum(t.get(s, 0.0) / (t.get("stack_size", 1) if s == "train" else 1) for t in timings) for s in STAGES}
    compute = stages["train"] + stages["validate"] + stages["evaluate"]
    # the share of the workers' time (wall x workers) not spent training, validating or evaluating; with one
    # worker, wall minus compute over wall
    overhead_share = 1 - compute / (wall * workers)
    peak_mb = (
        max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        / 1024
    )

    print(f"device: {device}; {summary.done} cells ({summary.failed} failed), pool {n_train + n_val:,} images")
    print(f"executor: stack {executor.get('stack')}, parallel {workers} ({executor.get('why') or 'as asked'})")
    if workers > 1:  # stages overlap across workers: they add up to cell-seconds, not to the wall time
        print(f"stages in cell-seconds, summed over {workers} workers running at once:")
        for stage, seconds in stages.items():
            print(f"  {stage:<11} {seconds:9.1f} s")
        print(
            f"wall {wall:.1f} s x {workers} workers; compute {compute:.1f} cell-seconds; harness overhead "
            f"(worker time not spent computing) {100 * overhead_share:.1f}%; peak host memory {peak_mb:,.0f} MB"
        )
    else:
        for stage, seconds in stages.items():
            print(f"  {stage:<11} {seconds:9.1f} s  {100 * seconds / wall:5.1f}%")
        print(f"  {'outside cells':<11} {wall - sum(stages.values()):9.1f} s  (start-up, data, store, report)")
        print(
            f"wall {wall:.1f} s; training+validation+evaluation compute {compute:.1f} s; harness overhead "
            f"{wall - compute:.1f} s = {100 * overhead_share:.1f}% of wall; peak host memory {peak_mb:,.0f} MB"
        )
    print(
        json.dumps(
            {
                "device": device,
                "scale": args.scale,
                "epochs": args.epochs,
                "folds": args.folds,
                "parallel": workers,
                "stack": executor.get("stack"),
                "executor_why": executor.get("why"),
                "threads": args.threads,
                "cache": "given" if args.cache_dir else "cold",
                "cells": summary.done,
                "wall_s": round(wall, 1),
                "stages_s": {k: round(v, 2) for k, v in stages.items()},
                "overhead_share": round(overhead_share, 4),
                "peak_host_mb": round(peak_mb),
                "failed_cells": summary.failed,
            }
        )
    )
    if summary.failed:
        print(f"{summary.failed} cells failed (see {out}/report.html): these figures do not time the whole suite")
        raise SystemExit(1)


def _print_partial(out: Path, seconds: float) -> None:
    """What an interrupted run got through: cells done, and the wall time that rate projects for all of them."""
    variants = load([out]).variants
    done, planned = sum(len(v.cells) for v in variants), sum(v.planned for v in variants)
    projected = seconds * planned / done if done else None
    print(f"interrupted after {seconds:.1f} s with {done} of {planned} cells done", end="")
    print(f"; at that rate all would take about {projected:.0f} s" if projected else "")
    print(json.dumps({"interrupted_s": round(seconds, 1), "cells_done": done, "cells_planned": planned,
                      "projected_wall_s": round(projected) if projected else None}))  # fmt: skip


if __name__ == "__main__":
    main()
