"""``device-smote``: SMOTE on the compute device with torch (chunked matmul kNN plus interpolation).

Same sampling as imbalanced-learn's SMOTE (class counts from its ``sampling_strategy``; each synthetic image lies
on the segment between a minority image and one of its k nearest same-class neighbours, chosen uniformly), much
faster on large data: the kNN is one matrix product per chunk instead of a tree search.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from octbench_plugins.resample import SMOTEParams
from pydantic import Field

from octbench import hookimpl
from octbench.technique import Resampler

CHUNK_ELEMENTS = 1 << 25  # rows x members per distance block: bounds memory at 128 MB of float32


def nearest_neighbours(points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (n, k) of each point's k nearest other points, Euclidean, by chunked matrix products."""
    centred = points - points.mean(0)  # translation-invariant; smaller norms keep float32 distances accurate
    norms = (centred * centred).sum(1)
    n = len(points)
    chunk = max(1, CHUNK_ELEMENTS // max(n, 1))
    out = torch.empty((n, k), dtype=torch.long, device=points.device)
    for start in range(0, n, chunk):
        rows = centred[start : start + chunk]
        # |a|^2 is the same along a row, so ranking by |b|^2 - 2ab ranks by distance; addmm fuses the two
        distances = torch.addmm(norms[None, :], rows, centred.T, alpha=-2)
        own = torch.arange(len(rows), device=points.device)
        distances[own, start + own] = float("inf")
        out[start : start + chunk] = distances.topk(k, dim=1, largest=False).indices
    return out


def smote(
    points: torch.Tensor, labels: np.ndarray, to_make: dict[int, int], k: int, generator: torch.Generator
) -> tuple[torch.Tensor, np.ndarray]:
    """Synthetic points per class as in imbalanced-learn's SMOTE, on ``points``' device."""
    labels_t = torch.as_tensor(labels, device=points.device)
    made, made_labels = [], []
    for cls, count in sorted(to_make.items()):
        if count <= 0:
            continue
        members = points[labels_t == cls]
        if len(members) <= k:
            raise ValueError(f"device-smote: class {cls} has {len(members)} samples, needs more than k_neighbors={k}")
        neighbours = nearest_neighbours(members, k)
        pick = torch.randint(0, len(members) * k, (count,), generator=generator, device=points.device)
        base, which = pick // k, pick % k
        gap = torch.rand((count, 1), generator=generator, device=points.device)
        start = members[base]
        made.append(start + gap * (members[neighbours[base, which]] - start))
        made_labels.append(np.full(count, cls, dtype=np.int64))
    if not made:
        return points[:0], np.empty(0, dtype=np.int64)
    return torch.cat(made), np.concatenate(made_labels)


class DeviceSMOTE(Resampler):
    """SMOTE with torch on the compute device: imbalanced-learn's sampling, a matmul kNN, much faster on big data."""

    name = "device-smote"

    class Params(SMOTEParams):
        device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where to compute (auto: CUDA if present)")

    def fit_resample(self, images, labels, *, random_state):
        from imblearn.utils import check_sampling_strategy

        to_make = check_sampling_strategy(self.params.sampling_strategy, labels, "over-sampling")
        device = self.params.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        generator = torch.Generator(device=device).manual_seed(random_state)
        flat = torch.as_tensor(images.reshape(len(images), -1), device=device).float()
        new, new_labels = smote(flat, labels, dict(to_make), self.params.k_neighbors, generator)
        new = new.cpu().numpy()
        if images.dtype == np.uint8:
            new = np.clip(np.rint(new), 0, 255).astype(np.uint8)
        new = new.astype(images.dtype, copy=False).reshape(len(new), *images.shape[1:])
        return np.concatenate([images, new]), np.concatenate([labels, new_labels]).astype(np.int64)


@hookimpl
def register_preprocessors(register):
    register(DeviceSMOTE)
