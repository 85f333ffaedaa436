"""Stage 3 of a run (suite -> plan -> **cells** -> store -> report): one cell, (suite, variant, seed, fold) in, one
result out, and what it runs: the preprocessing pipeline (``pipeline``, ``cache``), training (``train``, and
``stack_model``/``stack_train`` for several cells as one computation), inference and scores (``inference``,
``scores``, ``metrics``), Grad-CAM (``attribution``), the nested search (``search``), the machine's measured choices
(``machine``, ``device``), time limits (``deadline``) and worker processes (``workers``).

Importing this package loads nothing heavy; ``execute_stack``, ``failed_result``, ``CellTask`` and ``CellResult``
(what an executor plugin uses, ``octbench.technique.Executor``) load ``octbench.cell.execute`` when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

EXECUTOR_API = ("execute_stack", "failed_result", "CellTask", "CellResult")


def __getattr__(name: str) -> Any:
    if name in EXECUTOR_API:  # on first use, never while a module of this package is being imported
        return getattr(importlib.import_module("octbench.cell.execute"), name)
    raise AttributeError(f"module 'octbench.cell' has no attribute {name!r}")


__all__ = list(EXECUTOR_API)
