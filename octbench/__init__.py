"""octbench: which techniques really help on a medical-imaging dataset, by how much, at what cost."""

import os
import time
from importlib.metadata import PackageNotFoundError, version

from octbench.hookspecs import hookimpl  # pluggy only: torch is not loaded before the wait policy is decided


def _others_cpu_use(seconds: float = 0.1) -> float | None:
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


def _wait_policy() -> str:
    """torch's OpenMP threads spin while they wait for work. Beside another busy process that starves them: the seed
    CNN trained at 85 images/s instead of about 1,100 with passive waiting (2 cores, one busy process), so a
    machine already busy gets OMP_WAIT_POLICY=PASSIVE. On an idle one spinning is faster (the scaled-down ablation
    took 47 s against 61 s passive), so it stays. It must be decided before torch loads its thread pool; set
    OMP_WAIT_POLICY yourself to decide it."""
    if "OMP_WAIT_POLICY" in os.environ:
        return os.environ.get("OCTBENCH_WAIT_POLICY") or f"{os.environ['OMP_WAIT_POLICY']} (set in the environment)"
    if os.environ.get("OCTBENCH_WAIT_POLICY"):  # a worker process: its parent decided
        return os.environ["OCTBENCH_WAIT_POLICY"]
    busy = _others_cpu_use()
    if busy is not None and busy >= 0.5:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        decided = f"PASSIVE (other processes were using {busy:.1f} cores when octbench started)"
    else:
        decided = "spinning, torch's default (the CPU was idle when octbench started)"
    os.environ["OCTBENCH_WAIT_POLICY"] = decided
    return decided


WAIT_POLICY = _wait_policy()

try:
    __version__ = version("octbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["WAIT_POLICY", "__version__", "hookimpl"]
