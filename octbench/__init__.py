"""octbench: which techniques really help on a medical-imaging dataset, by how much, at what cost.

Importing it does no work: a plugin imports it for ``hookimpl`` alone.
"""

from importlib.metadata import PackageNotFoundError, version

from octbench.hookspecs import hookimpl  # pluggy only: torch is not loaded before the wait policy is decided

try:
    __version__ = version("octbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"


def __getattr__(name: str) -> str:
    if name == "WAIT_POLICY":  # decided on first use (``octbench.cpu_wait``); the command line asks first
        from octbench.cpu_wait import decide

        return decide()
    raise AttributeError(f"module 'octbench' has no attribute {name!r}")


__all__ = ["WAIT_POLICY", "__version__", "hookimpl"]
