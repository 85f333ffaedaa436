"""A newcomer's first minute, timed as they meet it: `octbench run SUITE` on a fresh machine (empty caches, no
measured choices), the same command again (nothing to train), `octbench report` of that run (with the figures the
run drew remembered, and with an empty cache), the report of a committed example, and the command line's start
(`--version`, `--help`).

Every figure is wall-clock seconds of a separate process, repeated; the JSON line gives every repeat and the
median. It measures whichever octbench the interpreter imports, so the same script times an older checkout too
(``PYTHONPATH=/path/to/old/checkout python benchmarks/first_minute.py``).

    python benchmarks/first_minute.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "octbench", *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"octbench {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="smoke", help="a shipped suite's name or a suite file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a --set for the run")
    parser.add_argument("--example", default="reports/breastmnist-example", help="a results folder to report ('' none)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    figures: dict[str, list[float]] = {}
    overrides = [item for value in args.overrides for item in ("--set", value)]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for repeat in range(args.repeats):
            fresh = root / f"machine-{repeat}"  # a machine that never ran octbench: no cache, no measured choices
            env = {
                **os.environ,
                "OCTBENCH_CACHE_DIR": str(fresh / "cache"),
                "OCTBENCH_TUNING_FILE": str(fresh / "tuning.json"),
                "NO_ALBUMENTATIONS_UPDATE": "1",
            }
            out = str(fresh / "out")
            run = ["run", args.suite, "--out", out, "--no-progress", *overrides]
            figures.setdefault("run", []).append(timed(run, env))
            figures.setdefault("rerun", []).append(timed(run, env))
            figures.setdefault("report", []).append(timed(["report", out], env))
            shutil.rmtree(fresh / "cache" / "figures", ignore_errors=True)
            figures.setdefault("report_cold", []).append(timed(["report", out], env))
            if args.example:
                shown = ["report", args.example, "--output", str(fresh / "example.html")]
                figures.setdefault("example_report", []).append(timed(shown, env))
            figures.setdefault("version", []).append(timed(["--version"], env))
            timed(["--help"], env)  # the first after an install reads the plugins once
            figures.setdefault("help", []).append(timed(["--help"], env))
    print(
        json.dumps(
            {
                "suite": args.suite,
                "set": args.overrides,
                "repeats": args.repeats,
                "median_s": {k: round(statistics.median(v), 2) for k, v in figures.items()},
                "seconds": {k: [round(x, 2) for x in v] for k, v in figures.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
