"""octbench: which techniques really help on a medical-imaging dataset, by how much, at what cost."""

import os
from importlib.metadata import PackageNotFoundError, version

# torch's OpenMP threads spin while waiting for work. On a machine where another process holds a core, spinning
# threads starve each other: the seed CNN trained at 85 images/s instead of 1,100 with passive waiting (2 cores,
# one busy process beside it), for about 8% less speed on an idle machine. It must be set before torch loads its
# thread pool; set OMP_WAIT_POLICY=ACTIVE yourself on a machine dedicated to the run.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = version("octbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from octbench.hookspecs import hookimpl

__all__ = ["__version__", "hookimpl"]
