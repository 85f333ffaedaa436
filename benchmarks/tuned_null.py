"""A null simulation for tuned comparisons, and what tuning costs.

The reference and a technique with no effect are each tuned with the same budget inside the folds
(``octbench.cell.search``: the learning rate, log-uniform over two decades), on R independently drawn synthetic data
sets. The technique is ``batch-augment`` with every probability 0 and Gaussian noise of SD 0.001 (a quarter of one
grey level): it cannot make a model better, but it sends training down another path, so the cells differ, and
TPE's proposals after its start-up trials (which both variants share: common random numbers) follow each variant's
own scores. The report's CV verdict (corrected resampled t-test, Holm) should call them different in at most 5% of
the replicates, within simulation error. (With no noise at all, the two variants are now identical cell for cell:
they are offered the same settings, so that null would test nothing.)

    python benchmarks/tuned_null.py --replicates 40 --trials 4      # about 15 minutes on 2 CPU cores

Prints each replicate's p-value, then the false-positive rate with its 95% Clopper-Pearson interval, the cost of
tuning (seconds per trial, per tuned cell and per variant) against an untuned cell's training, and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from scipy import stats

from octbench.report.analysis import ALPHA, analyse
from octbench.report.collect import load
from octbench.runner import run_suite

SUITE = """
name: tuned-null
dataset: {{name: synthetic-oct, n_train: {n_train}, n_val: {n_val}, n_test: 100, seed: {replicate}}}
cv: {{folds: {folds}, seeds: {seeds}, val_fraction: 0.2}}
train: {{epochs: {epochs}, batch_size: 32, device: cpu, threads: {threads}}}
defaults: {{model: {{name: cnn, widths: [8, 16], hidden: 16}}}}
executor: {{stack: 1}}
tune: {{trials: {trials}, space: {{train.optimizer.lr: {{log_uniform: [0.0003, 0.03]}}}}}}
variants:
  - name: baseline
  - name: does-nothing
    augmenters: [{{name: batch-augment, hflip: 0.0, vflip: 0.0, rotate: 0, brightness: 0.0, noise: 0.001}}]
"""


def replicate(r: int, args: argparse.Namespace, folder: Path) -> dict:
    suite = folder / f"null-{r}.yaml"
    settings = {
        "replicate": r, "n_train": args.n_train, "n_val": args.n_train // 4, "folds": args.folds,
        "seeds": list(range(args.seeds)), "epochs": args.epochs, "threads": args.threads, "trials": args.trials,
    }  # fmt: skip
    suite.write_text(textwrap.dedent(SUITE.format(**settings)))
    out = folder / f"out-{r}"
    start = time.perf_counter()
    summary = run_suite(suite, out=out, progress=False, check=False)
    wall = time.perf_counter() - start
    assert summary.failed == 0, f"replicate {r}: {summary.failed} cells failed"
    results = load([out])
    analysis = analyse(results)
    (noop,) = [a for a in analysis.variants if a.variant.key == "does-nothing"]
    comparison = noop.comparisons["accuracy"]
    records = [c.settings["search"] for v in results.variants for c in v.cells]
    trials = [t["seconds"] for record in records for t in record["history"]]
    final = [c.timings["train"] for v in results.variants for c in v.cells]
    return {
        "replicate": r,
        "p_holm": comparison.p_holm,
        "difference": comparison.test.mean_difference,
        "significant": comparison.p_holm < ALPHA,
        "wall_s": wall,
        "trial_s": float(np.mean(trials)),
        "tuning_per_cell_s": float(np.mean([record["seconds"] for record in records])),
        "final_train_s": float(np.mean(final)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=40)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=240)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for r in range(args.replicates):
            rows.append(replicate(r, args, Path(folder)))
            row = rows[-1]
            print(
                f"replicate {r:3d}: difference {row['difference']:+.4f}  Holm p {row['p_holm']:.3f}"
                f"{'  significant' if row['significant'] else ''}  ({row['wall_s']:.0f} s)",
                flush=True,
            )
    hits = sum(row["significant"] for row in rows)
    n = len(rows)
    low = stats.beta.ppf(0.025, hits, n - hits + 1) if hits else 0.0
    high = stats.beta.ppf(0.975, hits + 1, n - hits) if hits < n else 1.0
    cells = args.folds * args.seeds
    trial_s = float(np.mean([row["trial_s"] for row in rows]))
    per_cell = float(np.mean([row["tuning_per_cell_s"] for row in rows]))
    final = float(np.mean([row["final_train_s"] for row in rows]))
    print()
    print("| replicates | called different (Holm p < 0.05) | rate | 95% interval | nominal |")
    print("|---:|---:|---:|---|---:|")
    print(f"| {n} | {hits} | {hits / n:.3f} | [{low:.3f}, {high:.3f}] | {ALPHA:.2f} |")
    print()
    print(
        f"tuning: {trial_s:.2f} s per trial, {per_cell:.1f} s per tuned cell ({args.trials} trials), "
        f"{per_cell * cells:.0f} s per variant ({cells} cells); the tuned cell's own training {final:.2f} s: "
        f"tuning costs {per_cell / final:.1f}x the training it tunes"
    )
    print(json.dumps({"replicates": n, "significant": hits, "rate": hits / n, "interval": [low, high],
                      "trial_s": trial_s, "tuning_per_cell_s": per_cell, "final_train_s": final,
                      "args": vars(args)}))  # fmt: skip


if __name__ == "__main__":
    main()
