"""A metric where lower is better, for the tests of a search's direction (octbench's own are all higher-is-better)."""

from __future__ import annotations

import numpy as np

from octbench import hookimpl
from octbench.technique import Metric


class ErrorRate(Metric):
    """The share of images whose most probable class is wrong (lower is better)."""

    name = "error-rate"
    higher_is_better = False

    def compute(self, y_true, probs):
        return float(np.mean(probs.argmax(1) != y_true))


@hookimpl
def register_metrics(register):
    register(ErrorRate)
