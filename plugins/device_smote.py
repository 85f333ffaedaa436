"""``device-smote``: imbalanced-learn's SMOTE with its nearest-neighbour search done by torch on the device.

The neighbour search is nearly all of SMOTE's time on image data (every minority image against every other image
of its class, 784 or more dimensions). imbalanced-learn accepts any k-NN estimator for ``k_neighbors``; this one
is exact Euclidean search by chunked matrix products, on a GPU when there is one. Sampling and interpolation stay
imbalanced-learn's, so with the same neighbours and seed the output equals ``smote``'s (tested).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from octbench_plugins.resample import SMOTEParams, resample_images
from pydantic import Field
from scipy import sparse
from sklearn.base import BaseEstimator

from octbench import hookimpl
from octbench.technique import Resampler

CHUNK_ELEMENTS = 1 << 25  # query rows x fitted points per distance block: bounds memory at 128 MB of float32


class TorchNeighbours(BaseEstimator):
    """Exact Euclidean k nearest neighbours with torch (a stand-in for scikit-learn's ``NearestNeighbors``).

    Distances are ranked in float32, after centring on the fitted points' mean to keep the products small. Asked
    about the very array it was fitted on, each point is its own first neighbour, as with scikit-learn.
    """

    def __init__(self, n_neighbors: int = 6, device: str = "cpu") -> None:
        self.n_neighbors = n_neighbors
        self.device = device

    def fit(self, X, y=None):
        self._fitted_array = X
        points = torch.as_tensor(np.asarray(X, dtype=np.float32), device=self.device)
        self._mean = points.mean(0)
        self._points = points - self._mean
        self._norms = (self._points * self._points).sum(1)
        self.n_samples_fit_ = len(points)
        return self

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        k = n_neighbors or self.n_neighbors
        itself = X is None or X is self._fitted_array
        if k + (X is None) > self.n_samples_fit_:
            raise ValueError(
                f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {k}, n_samples_fit = {self.n_samples_fit_}"
            )
        if itself:
            queries = self._points
        else:
            queries = torch.as_tensor(np.asarray(X, dtype=np.float32), device=self.device) - self._mean
        n = len(queries)
        chunk = max(1, CHUNK_ELEMENTS // max(self.n_samples_fit_, 1))
        indices = torch.empty((n, k), dtype=torch.long, device=self.device)
        distances = torch.empty((n, k), dtype=torch.float32, device=self.device)
        for start in range(0, n, chunk):
            rows = queries[start : start + chunk]
            # |q|^2 is the same along a row, so |p|^2 - 2 q.p ranks by distance; addmm fuses the two
            scores = torch.addmm(self._norms[None, :], rows, self._points.T, alpha=-2)
            if itself:
                own = torch.arange(len(rows), device=self.device)
                scores[own, start + own] = float("-inf") if X is not None else float("inf")
            best = scores.topk(k, dim=1, largest=False)
            indices[start : start + chunk] = best.indices
            row_norms = (rows * rows).sum(1, keepdim=True)
            distances[start : start + chunk] = (best.values + row_norms).clamp_min(0).sqrt()
        if itself and X is not None:
            distances[:, 0] = 0.0
        if return_distance:
            return distances.cpu().numpy(), indices.cpu().numpy()
        return indices.cpu().numpy()

    def kneighbors_graph(self, X=None, n_neighbors=None, mode="connectivity"):
        """As scikit-learn's: a sparse (queries, fitted points) matrix of ones or distances at the neighbours."""
        distances, indices = self.kneighbors(X, n_neighbors)
        rows, k = indices.shape
        data = distances.ravel() if mode == "distance" else np.ones(indices.size)
        pointers = np.arange(0, rows * k + 1, k)
        return sparse.csr_matrix((data, indices.ravel(), pointers), shape=(rows, self.n_samples_fit_))


class DeviceSMOTE(Resampler):
    """SMOTE (imbalanced-learn's) with the neighbour search on the compute device: much faster on big data."""

    name = "device-smote"

    class Params(SMOTEParams):
        device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where to search (auto: CUDA if present)")

    def fit_resample(self, images, labels, *, random_state):
        from imblearn.over_sampling import SMOTE as ImblearnSMOTE

        device = self.params.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        sampler = ImblearnSMOTE(
            sampling_strategy=self.params.sampling_strategy,
            k_neighbors=TorchNeighbours(n_neighbors=self.params.k_neighbors + 1, device=device),
            random_state=random_state,
        )
        return resample_images(sampler, images, labels)


@hookimpl
def register_preprocessors(register):
    register(DeviceSMOTE)
