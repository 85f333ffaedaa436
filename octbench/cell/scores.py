"""Model outputs as scores that keep their ranking: log-probabilities and one-vs-rest log-odds in float64.

A cell stores its models' logits as float32, computed in float32 even when training ran under bf16 autocast.
Probabilities are derived from them here, in float64 and in log space, because a float32 softmax saturates
(P = 1.0 exactly once a logit leads by about 17) and bf16 logits carry 8 bits of mantissa: either ties test
images that the model ranks apart, and ties lower an AUC. The score a one-vs-rest AUC ranks by is the class's
log-odds, log p_c - log(1 - p_c) = l_c - logsumexp(l_j, j != c), which never saturates; for a binary task it is
l_1 - l_0 for class 1, and its negative for class 0, so both classes give the same AUC.

Stores written before logits were stored hold float32 probabilities; ``Scores.from_stored`` reads both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp


@dataclass(frozen=True)
class Scores:
    """Per image and class: log p_c and log (1 - p_c), float64."""

    log_p: np.ndarray
    log_not_p: np.ndarray

    @classmethod
    def from_logits(cls, logits: np.ndarray) -> Scores:
        logits = np.asarray(logits, dtype=np.float64)
        total = logsumexp(logits, axis=1, keepdims=True)
        classes = logits.shape[1]
        others = np.empty_like(logits)
        for c in range(classes):
            others[:, c] = logsumexp(np.delete(logits, c, axis=1), axis=1) if classes > 1 else -np.inf
        return cls(logits - total, others - total)

    @classmethod
    def from_probabilities(cls, probs: np.ndarray) -> Scores:
        probs = np.asarray(probs, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return cls(np.log(probs), np.log1p(-probs))

    @classmethod
    def from_stored(cls, values: np.ndarray, kind: str) -> Scores:
        return cls.from_logits(values) if kind == "logits" else cls.from_probabilities(values)

    @classmethod
    def ensemble(cls, members: Sequence[Scores]) -> Scores:
        """Soft voting: the mean of the members' probabilities, kept in log space (log of a mean of exps)."""
        if len(members) == 1:
            return members[0]
        shift = np.log(len(members))
        log_p = logsumexp(np.stack([m.log_p for m in members]), axis=0) - shift
        log_not_p = logsumexp(np.stack([m.log_not_p for m in members]), axis=0) - shift
        return cls(log_p, log_not_p)

    @property
    def probs(self) -> np.ndarray:
        return np.exp(self.log_p)

    @property
    def log_odds(self) -> np.ndarray:
        """One-vs-rest ranking scores, (N, classes): what every AUC here is computed from."""
        with np.errstate(invalid="ignore"):
            odds = self.log_p - self.log_not_p
        return np.nan_to_num(odds, nan=0.0)

    @property
    def predicted(self) -> np.ndarray:
        return self.log_p.argmax(1)
