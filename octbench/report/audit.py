"""Near-duplicate audit: does the CV pool hold near-copies of its own images that the official test split does not?

MedMNIST's validation split is a random cut of the source training set, which carries no patient identifiers, and OCT
datasets hold many B-scans per patient: a held-out fold can then hold near-copies of training images, and CV looks
better than the patient-disjoint test split (Tampu et al., Scientific Data 2022). For every pool image we find its
nearest neighbour among the other pool images (what CV trains on when that image is held out), and for every test image
its nearest neighbour in the pool (what the test split's models trained on).

Distance: each image is shrunk to at most ``SIDE`` x ``SIDE`` pixels by area averaging, centred and scaled to unit
length, so brightness and contrast do not count; two images' distance is the Euclidean distance of those vectors
(0 for the same picture, about 1.41 for unrelated ones, 2 for a negative). A pair closer than ``threshold`` counts as a
near-duplicate. A blank or near-constant frame (its shrunk pixels vary by less than ``BLANK`` grey levels) has no
structure to compare, and any two of them would normalise to the same vector: they are counted apart, neither
matched nor matching. Images are shrunk in chunks and compared in batches on the chosen device, so memory grows with
the number of images, not their size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

SIDE = 32
THRESHOLD = 0.10  # planted copies and BreastMNIST/RetinaMNIST measurements: docs/audit.md
BLANK = 2.0  # grey levels (SD of the shrunk image) below which a frame is blank or near-constant
BATCH = 2048
CHUNK = 256  # images shrunk at a time: a float copy of 256 images at 224 px RGB is 154 MB
VERSION = 2  # of what an audit computes (2: blank frames apart), in the name of a report's cached audit
POOL, TEST = "pool ↔ pool", "test → pool"


@dataclass(frozen=True)
class Pairing:
    """For each query image, its nearest reference image and their distance."""

    name: str  # e.g. "pool ↔ pool"
    queries: str  # the split the rows are drawn from: "pool" or "test"
    distances: np.ndarray
    neighbours: np.ndarray
    threshold: float

    @property
    def blank(self) -> np.ndarray:
        """Blank or near-constant query images (no distance: counted apart)."""
        return np.isnan(self.distances)

    @property
    def near(self) -> np.ndarray:
        return self.distances < self.threshold  # never for a blank image (NaN)

    @property
    def rate(self) -> float:
        """The share of the images with structure whose nearest neighbour is closer than the threshold."""
        compared = int((~self.blank).sum())
        return float(self.near.sum() / compared) if compared else 0.0

    def closest(self, count: int) -> list[tuple[int, int, float]]:
        """(query, neighbour, distance) of the closest pairs, each unordered pair once."""
        seen: set[tuple[int, int]] = set()
        found = []
        for i in np.argsort(self.distances, kind="stable")[: int((~self.blank).sum())]:  # NaN sorts last
            j = int(self.neighbours[i])
            key = (min(int(i), j), max(int(i), j)) if self.queries == "pool" else (int(i), j)
            if key in seen:
                continue
            seen.add(key)
            found.append((int(i), j, float(self.distances[i])))
            if len(found) == count:
                break
        return found


@dataclass(frozen=True)
class Audit:
    within_pool: Pairing
    test_to_pool: Pairing | None

    def arrays(self) -> dict[str, np.ndarray]:
        found = {"pool_distances": self.within_pool.distances, "pool_neighbours": self.within_pool.neighbours}
        if self.test_to_pool is not None:
            found |= {"test_distances": self.test_to_pool.distances, "test_neighbours": self.test_to_pool.neighbours}
        return found

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], threshold: float) -> Audit:
        within = Pairing(POOL, "pool", arrays["pool_distances"], arrays["pool_neighbours"], threshold)
        across = None
        if "test_distances" in arrays:
            across = Pairing(TEST, "test", arrays["test_distances"], arrays["test_neighbours"], threshold)
        return cls(within, across)

    @property
    def optimistic(self) -> bool:
        """Whether CV may be optimistic for this reason: the pool holds clearly more near-copies of itself than the
        test split holds of the pool (at least 2 % of pool images, and twice the test split's rate)."""
        pool = self.within_pool.rate
        test = self.test_to_pool.rate if self.test_to_pool is not None else 0.0
        return pool >= 0.02 and pool >= 2 * test

    def sentence(self) -> str:
        pool = self.within_pool
        text = (
            f"{100 * pool.rate:.1f}% of CV-pool images have a near-duplicate elsewhere in the pool "
            f"(distance < {pool.threshold:g})"
        )
        if self.test_to_pool is not None:
            text += f", against {100 * self.test_to_pool.rate:.1f}% of test images in the pool"
        blanks = [
            f"{int(p.blank.sum())} {p.queries}" for p in (pool, self.test_to_pool) if p is not None and p.blank.any()
        ]
        if blanks:
            text += f" (blank or near-constant frames, counted apart: {' and '.join(blanks)})"
        if self.optimistic:
            text += (
                "; a held-out fold may hold near-copies of training images, so CV may be optimistic "
                "compared with the test split"
            )
        elif self.test_to_pool is not None and self.test_to_pool.rate >= 0.02:
            text += "; the test split is not fully independent of the images the models trained on either"
        return text + "."


def features(images: np.ndarray, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W, C) uint8 -> ((N, D) float32 rows shrunk to at most SIDE pixels a side, centred, unit length;
    (N,) True for a blank or near-constant image), ``CHUNK`` images at a time (a float copy of a whole 224 px pool
    would take tens of GB)."""
    rows = []
    for start in range(0, len(images), CHUNK):
        chunk = np.asarray(images[start : start + CHUNK], dtype=np.float32)  # a copy: the data is read-only
        x = torch.from_numpy(chunk).to(device).permute(0, 3, 1, 2)
        if max(x.shape[-2:]) > SIDE:
            x = F.adaptive_avg_pool2d(x, (min(SIDE, x.shape[-2]), min(SIDE, x.shape[-1])))
        rows.append(x.flatten(1))
        del chunk, x  # one chunk's copy at a time
    x = torch.cat(rows) if rows else torch.zeros((0, 1), device=device)
    x = x - x.mean(dim=1, keepdim=True)
    norm = x.norm(dim=1, keepdim=True)
    blank = norm[:, 0] < BLANK * math.sqrt(x.shape[1])  # the SD of the shrunk image, in grey levels
    return x / norm.clamp_min(1e-6), blank


def nearest(
    queries: tuple[torch.Tensor, torch.Tensor],
    references: tuple[torch.Tensor, torch.Tensor],
    *,
    same: bool = False,
    batch: int = BATCH,
) -> tuple[np.ndarray, np.ndarray]:
    """Distance to, and index of, each query's nearest reference (``features``: rows and blank flags); ``same``: the
    two are one set, so an image is never its own neighbour. A blank query gets NaN and -1; a blank reference is
    nobody's neighbour."""
    (query, query_blank), (reference, reference_blank) = queries, references
    distances, neighbours = [], []
    for start in range(0, len(query), batch):
        block = torch.cdist(query[start : start + batch], reference)
        block[:, reference_blank] = float("inf")
        if same:
            rows = torch.arange(block.shape[0], device=block.device)
            block[rows, rows + start] = float("inf")
        d, i = block.min(dim=1)
        blank = query_blank[start : start + batch] | torch.isinf(d)
        distances.append(torch.where(blank, float("nan"), d).cpu().numpy())
        neighbours.append(torch.where(blank, -1, i).cpu().numpy())
    if not distances:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    return np.concatenate(distances), np.concatenate(neighbours)


def audit(
    pool: np.ndarray,
    test: np.ndarray | None,
    *,
    threshold: float = THRESHOLD,
    device: torch.device | str = "cpu",
) -> Audit:
    """Near-duplicates within the CV pool, and of the test split in the pool (images (N, H, W, C) uint8)."""
    if len(pool) < 2:
        raise ValueError("a near-duplicate audit needs at least two pool images")
    with torch.no_grad():
        reference = features(pool, device)
        within = Pairing(POOL, "pool", *nearest(reference, reference, same=True), threshold)
        across = None
        if test is not None and len(test):
            across = Pairing(TEST, "test", *nearest(features(test, device), reference), threshold)
    return Audit(within, across)
