"""octbench: which techniques really help on a medical-imaging dataset, by how much, at what cost."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("octbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from octbench.hookspecs import hookimpl

__all__ = ["__version__", "hookimpl"]
