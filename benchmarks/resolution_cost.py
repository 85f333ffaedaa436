"""What a cell costs at 28, 64 and 128 px for the seed CNN and ResNet-18: one suite whose variants differ only in
model and input size (``dataset: {size: ...}``), run through octbench on OCTMNIST-shaped synthetic data, each cell
alone (no stacking, one at a time). Prints the measured training and inference speed of every (model, size) and the
cost of one full-size OCTMNIST cell extrapolated from them: ``epochs`` x (70,183 training images / training speed +
7,798 inner-validation images / inference speed) + (19,495 held-out + 1,000 test images) / inference speed, for
5-fold CV with a 10% inner split.

    python benchmarks/resolution_cost.py --device cpu --images 512          # a few minutes on 2 CPU cores
    python benchmarks/resolution_cost.py --device cuda --images 20000       # on a GPU

Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import textwrap
from pathlib import Path

from octbench.report.collect import load
from octbench.runner import run_suite

POOL, FOLDS, VAL_FRACTION, TEST = 97_477, 5, 0.1, 1_000
TRAIN_IMAGES = int(POOL * (FOLDS - 1) / FOLDS * (1 - VAL_FRACTION))  # one epoch of a full-size cell
INNER_VAL = int(POOL * (FOLDS - 1) / FOLDS * VAL_FRACTION)
HELD_OUT = POOL // FOLDS
MODELS = {"seed-cnn": "seed-cnn", "resnet18": "resnet18"}


def suite_text(images: int, sizes: list[int], device: str, batch: int, threads: int | None) -> str:
    variants = []
    for model in MODELS:
        for size in sizes:
            variants.append(f"- name: {model}-{size}\n  model: {model}\n  dataset: {{size: {size}}}")
    threads_line = f", threads: {threads}" if threads else ""
    return (
        textwrap.dedent(f"""\
        name: resolution-cost
        dataset: {{name: synthetic-oct, size: 28, n_train: {images}, n_val: {max(8, images // 9)}, n_test: 256}}
        cv: {{folds: 2, seeds: [0], val_fraction: 0.1, test_split: true}}
        train: {{epochs: 1, batch_size: {batch}, device: {device}, precision: fp32{threads_line}}}
        executor: {{name: local, stack: 1, parallel: 1}}
        variants:
        """)
        + textwrap.indent("\n".join(variants), "  ")
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=512, help="official-train-like images of the synthetic data")
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 64, 128])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the extrapolated full-size cell")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        suite = Path(folder) / "resolution-cost.yaml"
        suite.write_text(suite_text(args.images, args.sizes, args.device, args.batch, args.threads))
        summary = run_suite(suite, out=Path(folder) / "out", progress=False, check=False)
        results = load([Path(folder) / "out"])
    rows = []
    for variant in results.variants:
        model, size = variant.name.rsplit("-", 1)
        train = statistics.median(c.timings["train_images_per_s"] for c in variant.cells)
        infer = statistics.median(c.timings["infer_images_per_s"] for c in variant.cells)
        measured = statistics.median(sum(c.timings.get(k, 0.0) for k in ("train", "validate", "evaluate"))
                                     for c in variant.cells)  # fmt: skip
        full = args.epochs * (TRAIN_IMAGES / train + INNER_VAL / infer) + (HELD_OUT + TEST) / infer
        rows.append({"model": model, "size": int(size), "train_images_per_s": round(train, 1),
                     "infer_images_per_s": round(infer, 1), "measured_cell_s": round(measured, 2),
                     "full_cell_s": round(full, 1)})  # fmt: skip
    print(f"{'model':<10}{'size':>6}{'train img/s':>14}{'infer img/s':>14}{'cell here s':>13}{'full cell':>12}")
    for row in rows:
        print(f"{row['model']:<10}{row['size']:>6}{row['train_images_per_s']:>14,.0f}{row['infer_images_per_s']:>14,.0f}"
              f"{row['measured_cell_s']:>13.1f}{row['full_cell_s'] / 3600:>11.2f}h")  # fmt: skip
    base = {r["model"]: r["full_cell_s"] for r in rows if r["size"] == min(args.sizes)}
    ratios = {f"{r['model']}-{r['size']}": round(r["full_cell_s"] / base[r["model"]], 2) for r in rows}
    print(json.dumps({"device": args.device, "images": args.images, "cells": summary.done, "failed": summary.failed,
                      "epochs": args.epochs, "rows": rows, "cost_vs_smallest": ratios}))  # fmt: skip


if __name__ == "__main__":
    main()
