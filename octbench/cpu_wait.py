"""Whether torch's CPU threads spin or sleep while they wait for work, decided once per run before torch loads.

torch's OpenMP threads spin while they wait for work. Beside another busy process that starves them, so a machine
already busy gets ``OMP_WAIT_POLICY=PASSIVE``; on an idle one spinning is faster, so it stays (the figures are in
docs/benchmarks.md, section 9). OpenMP reads the setting when torch loads, so the command line (and a Ray worker, by its
setup hook) decides before anything imports torch; worker processes inherit the decision. Set ``OMP_WAIT_POLICY``
yourself to decide it.
"""

from __future__ import annotations

import os
import sys
import time


def others_cpu_use(seconds: float = 0.1) -> float | None:
    """Cores' worth of CPU time that other processes used over a short sample (Linux), or None."""

    def sample() -> tuple[float, float]:
        with open("/proc/stat") as handle:
            fields = [float(v) for v in handle.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
        return sum(fields) - idle, sum(fields)

    try:
        busy_before, total_before = sample()
        time.sleep(seconds)
        busy_after, total_after = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total_after - total_before
    return (busy_after - busy_before) / total * (os.cpu_count() or 1) if total > 0 else None


def decide() -> str:
    """The wait policy of this process and the processes it starts, and why: decided on the first call, which
    samples the CPU for 0.1 s unless the environment already says (``OMP_WAIT_POLICY``, or a parent's decision).
    Called after torch has loaded (``run_suite`` from a script), it still decides for the worker processes."""
    if "OMP_WAIT_POLICY" in os.environ:
        return os.environ.get("OCTBENCH_WAIT_POLICY") or f"{os.environ['OMP_WAIT_POLICY']} (set in the environment)"
    if os.environ.get("OCTBENCH_WAIT_POLICY"):  # a worker process: its parent decided
        return os.environ["OCTBENCH_WAIT_POLICY"]
    busy = others_cpu_use()
    if busy is not None and busy >= 0.5:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        decided = f"PASSIVE (other processes were using {busy:.1f} cores when octbench started)"
        if "torch" in sys.modules:  # OpenMP read the policy when torch loaded: only new processes get it
            decided += "; for its worker processes only: this process had loaded torch before it decided"
    else:
        decided = "spinning, torch's default (the CPU was idle when octbench started)"
    os.environ["OCTBENCH_WAIT_POLICY"] = decided
    return decided
