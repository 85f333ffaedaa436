"""Several small-model cells on one device at once: which way fills it best.

Every cell trains the seed CNN with octbench's trainer and its defaults (uint8 images resident on the device,
`batch-augment` on whole batches, bf16 and channels-last where native) for --epochs epochs of --images
OCTMNIST-shaped synthetic images. The ways to run --cells of them:

- sequential: one after another in this process (the baseline);
- processes:  one process per cell, all at once (what ``executor: {parallel: N}`` does);
- threads:    one thread per cell in this process, on CUDA each with its own stream;
- graphs:     one after another with ``train.compile: reduce-overhead`` (torch.compile replaying CUDA graphs;
              CUDA only, and the compile time of the first cell is reported apart).

Every way is timed after a warm-up, from the moment all its cells may start to the moment the last one ends.

    python benchmarks/concurrent_cells.py --device cuda --cells 4 --batch 64 256 --images 100000
    python benchmarks/concurrent_cells.py --device cpu --cells 2 --images 3000 --ways sequential processes threads

Prints aggregate images/s per way and batch size, each as a ratio to sequential, then a JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import threading
import time

import torch
from vs_seed_loop import seed_cnn  # a sibling script: benchmarks/ is on sys.path when run as one

from octbench.cell.device import clock, describe, resolve
from octbench.cell.train import to_device, train
from octbench.plugins import PluginHost
from octbench.suite import Train

WAYS = ("sequential", "processes", "threads", "graphs")


def make_data(host: PluginHost, images: int):
    """OCTMNIST-shaped synthetic images, shared by the cells of a process (each has its own model and seed)."""
    return host.create("dataset", "synthetic-oct", {"n_train": images, "n_val": 16, "n_test": 16}).load(None)


class Cell:
    """One cell's model, data on the device and trainer settings; ``run`` trains it and returns images seen."""

    def __init__(self, host: PluginHost, data, device: torch.device, seed: int, batch: int, epochs: int):
        self.model, self.augment = seed_cnn(host, device, seed)
        self.train_xy = to_device(data.train_images, data.train_labels, device)
        self.val_xy = to_device(data.val_images, data.val_labels, device)
        self.seed = seed
        self.batch, self.epochs, self.device = batch, epochs, device

    def run(self, compile_mode: str | bool = False, epochs: int | None = None) -> int:
        epochs = epochs or self.epochs
        config = Train(epochs=epochs, batch_size=self.batch, device=str(self.device), compile=compile_mode)
        result = train(
            self.model,
            self.train_xy,
            self.val_xy,
            config=config,
            epochs=epochs,
            augmenters=[self.augment],
            regularizers=[],
            seed=self.seed,
            num_classes=4,
        )
        n = len(self.train_xy[1])
        return result.epochs_run * (n - (n % self.batch == 1))  # the trainer skips a trailing batch of one


def sequential(cells: list[Cell], compile_mode: str | bool = False) -> tuple[int, float]:
    start = clock(cells[0].device)
    seen = sum(cell.run(compile_mode) for cell in cells)
    return seen, clock(cells[0].device) - start


def threads(cells: list[Cell]) -> tuple[int, float]:
    device = cells[0].device
    seen = [0] * len(cells)
    barrier = threading.Barrier(len(cells) + 1)

    def work(i: int) -> None:
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        barrier.wait()
        if stream is None:
            seen[i] = cells[i].run()
        else:
            with torch.cuda.stream(stream):
                seen[i] = cells[i].run()
            stream.synchronize()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(cells))]
    for w in workers:
        w.start()
    start = clock(device)
    barrier.wait()
    for w in workers:
        w.join()
    return sum(seen), clock(device) - start


def _process_cell(args: dict, seed: int, threads_each: int, barrier, results) -> None:
    torch.set_num_threads(threads_each)
    device = resolve(args["device"])
    host = PluginHost.load()
    cell = Cell(host, make_data(host, args["images"]), device, seed, args["batch"], args["epochs"])
    cell.run(epochs=1)  # warm-up, as in the other ways
    barrier.wait()
    start = clock(device)
    seen = cell.run()
    results.put((seen, start, clock(device)))


def processes(args: dict, count: int) -> tuple[int, float]:
    """Spawned processes (CUDA cannot fork); each builds its cell and warms up before the common start."""
    context = mp.get_context("spawn")
    barrier, results = context.Barrier(count), context.Queue()
    threads_each = max(1, torch.get_num_threads() // count)
    workers = [
        context.Process(target=_process_cell, args=(args, seed, threads_each, barrier, results))
        for seed in range(count)
    ]
    for w in workers:
        w.start()
    done = [results.get() for _ in workers]
    for w in workers:
        w.join()
        if w.exitcode:
            raise RuntimeError(f"a worker process exited with {w.exitcode}")
    return sum(d[0] for d in done), max(d[2] for d in done) - min(d[1] for d in done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cells", type=int, default=4, help="cells run at once")
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--images", type=int, default=20_000, help="training images per cell")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per cell")
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    args = parser.parse_args()

    device = resolve(args.device)
    host = PluginHost.load()
    ways = [w for w in args.ways if w != "graphs" or device.type == "cuda"]
    print(f"device: {describe(device)}; {args.cells} cells of {args.images:,} images x {args.epochs} epochs each")
    figures: dict[str, dict[int, float]] = {w: {} for w in ways}
    compile_s = None
    data = make_data(host, args.images)
    for batch in args.batch:
        cells = [Cell(host, data, device, seed, batch, args.epochs) for seed in range(args.cells)]
        for cell in cells:
            cell.run(epochs=1)  # warm-up: kernels chosen, allocator primed
        for way in ways:
            if way == "sequential":
                seen, seconds = sequential(cells)
            elif way == "threads":
                seen, seconds = threads(cells)
            elif way == "processes":
                seen, seconds = processes({**vars(args), "batch": batch}, args.cells)
            else:
                start = time.perf_counter()
                for cell in cells:  # compile and capture each cell's model, untimed
                    cell.run("reduce-overhead", epochs=1)
                compile_s = time.perf_counter() - start
                seen, seconds = sequential(cells, "reduce-overhead")
            figures[way][batch] = seen / seconds
            ratio = figures[way][batch] / figures["sequential"][batch] if "sequential" in figures else float("nan")
            print(f"  batch {batch:>5}  {way:<10} {figures[way][batch]:>12,.0f} images/s  {ratio:5.2f}x sequential")
    if compile_s is not None:
        print(f"graphs: compiling and capturing {args.cells} models took {compile_s:.1f} s (not in the figures)")
    print(
        json.dumps(
            {
                "device": describe(device),
                "cells": args.cells,
                "images": args.images,
                "epochs": args.epochs,
                "images_per_s": {w: {b: round(v) for b, v in f.items()} for w, f in figures.items()},
                "graphs_compile_s": None if compile_s is None else round(compile_s, 1),
            }
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    main()
