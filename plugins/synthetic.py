"""``synthetic-oct``: deterministic OCT-like images for tests, smoke runs and full-size benchmarks.

Each image is a retinal cross-section: a curved, layered retina over a bright RPE band and a dim choroid, with a
foveal pit, seen at low and varying contrast through speckle. Classes follow OCTMNIST's four diagnoses, each
with its own lesion: choroidal neovascularisation (RPE elevated over a bright blob), diabetic macular edema
(thickened retina with dark fluid cysts), drusen (small bumps along the RPE) and normal. Train and val follow
OCTMNIST's class imbalance, test is balanced, as in the real dataset.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Dataset, Splits

CLASS_NAMES = ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"]
TRAIN_PROPORTIONS = np.array([33484, 10213, 7754, 46026]) / 97477  # OCTMNIST's train split
PIXEL_BUDGET = 4_000_000  # pixels generated per chunk, bounding memory at any image size


class SyntheticOCT(Dataset):
    """Deterministic OCT-like images with OCTMNIST's four classes and split layout; any size and count."""

    name = "synthetic-oct"
    offline = True

    class Params(Params):
        n_train: int = Field(2000, ge=8, description="official-train-like split size")
        n_val: int = Field(250, ge=4, description="official-val-like split size")
        n_test: int = Field(400, ge=4, description="balanced test split size")
        size: int = Field(28, ge=16, le=256, description="image side in pixels")
        channels: Literal[1, 3] = Field(1, description="1 (grayscale) or 3 (RGB-tinted)")
        noise: float = Field(0.3, ge=0, le=2, description="speckle strength")
        seed: int = Field(0, ge=0, description="the data's own seed (not the cross-validation seed)")

    def load(self, data_dir: str | None, *, progress: bool = False) -> Splits:
        p = self.params
        parts = {}
        for split_id, (split, n) in enumerate((("train", p.n_train), ("val", p.n_val), ("test", p.n_test))):
            rng = np.random.default_rng([p.seed, split_id])
            proportions = np.full(4, 0.25) if split == "test" else TRAIN_PROPORTIONS
            labels = _labels(n, proportions, rng)
            parts[f"{split}_images"] = render(labels, p.size, p.channels, p.noise, rng)
            parts[f"{split}_labels"] = labels
        digest = hashlib.md5(usedforsecurity=False)
        for array in parts.values():
            digest.update(np.ascontiguousarray(array).tobytes())
        return Splits(
            **parts, class_names=list(CLASS_NAMES), source=f"synthetic-oct {p.model_dump()}", md5=digest.hexdigest()
        )


def _labels(n: int, proportions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    counts = np.maximum(1, np.floor(proportions * n)).astype(int)
    counts[np.argmax(counts)] += n - counts.sum()
    labels = np.repeat(np.arange(4), counts)
    rng.shuffle(labels)
    return labels.astype(np.int64)


def render(labels: np.ndarray, size: int, channels: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Images (N, size, size, channels) uint8 for the given labels."""
    out = np.empty((len(labels), size, size, channels), dtype=np.uint8)
    chunk = max(1, PIXEL_BUDGET // (size * size))
    for start in range(0, len(labels), chunk):
        gray = _render_gray(labels[start : start + chunk], size, noise, rng)
        tint = np.array([0.9, 1.0, 1.1][:channels] if channels == 3 else [1.0], dtype=np.float32)
        out[start : start + chunk] = np.clip(gray[..., None] * tint * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def _bumps(u: np.ndarray, centres: np.ndarray, width: float, height: np.ndarray) -> np.ndarray:
    """Sum of Gaussian bumps along u: centres and height (N, K) -> (N, W)."""
    return (height[:, :, None] * np.exp(-(((u[None, None, :] - centres[:, :, None]) / width) ** 2))).sum(1)


def _render_gray(labels: np.ndarray, size: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    n = len(labels)
    u = np.linspace(0, 1, size, dtype=np.float32)
    v = u[None, :, None]  # rows
    col = lambda a: a[:, None].astype(np.float32)  # noqa: E731 - per-sample scalar to (N, 1)
    centre = col(0.5 + 0.15 * (rng.random(n) - 0.5))
    top = (
        col(0.28 + 0.06 * rng.random(n))
        + col(0.10 * (rng.random(n) - 0.5)) * (u - 0.5)
        + col(0.3 * (rng.random(n) - 0.5)) * (u - 0.5) ** 2
        + 0.06 * np.exp(-(((u - centre) / 0.08) ** 2))  # foveal pit
    )
    thickness = col(0.26 + 0.05 * rng.random(n)) + 0.08 * col(labels == 1)  # edema thickens the retina
    rpe = top + thickness
    cnv, drusen = labels == 0, labels == 2
    rpe -= col(cnv * (0.10 + 0.08 * rng.random(n))) * np.exp(-(((u - centre) / 0.1) ** 2))
    k = 4
    rpe -= col(drusen) * _bumps(u, rng.uniform(0.15, 0.85, (n, k)), 0.035, rng.uniform(0.02, 0.05, (n, k)))

    top3, rpe3 = top[:, None, :], rpe[:, None, :]
    depth = (v - top3) / np.maximum(rpe3 - top3, 1e-3)
    inside = 1 / (1 + np.exp(-(v - top3) / 0.012)) * (1 / (1 + np.exp((v - rpe3) / 0.012)))
    layers = 0.38 + 0.14 * np.sin(2 * np.pi * 3.5 * depth)
    image = 0.05 + inside * layers
    image += 0.55 * np.exp(-(((v - rpe3) / 0.02) ** 2))  # RPE band
    below = v > rpe3
    image += below * 0.25 * np.exp(-(v - rpe3) / 0.15)  # choroid
    # fibrovascular blob under the elevated RPE
    blob_v = rpe3 + 0.05
    image += (
        cnv[:, None, None]
        * 0.7
        * np.exp(-(((u[None, None, :] - centre[:, :, None]) / 0.08) ** 2) - ((v - blob_v) / 0.04) ** 2)
    )
    # edema: dark elliptical cysts inside the retina
    dme = np.flatnonzero(labels == 1)
    if len(dme):
        for _ in range(3):
            cu = rng.uniform(0.3, 0.7, len(dme))[:, None, None]
            cd = rng.uniform(0.3, 0.7, len(dme))[:, None, None]
            r = rng.uniform(0.05, 0.09, len(dme))[:, None, None]
            cyst = np.exp(-(((u[None, None, :] - cu) / r) ** 2) - ((depth[dme] - cd) / 0.18) ** 2)
            image[dme] *= 1 - 0.75 * cyst * inside[dme]
    # acquisition: low, varying contrast and multiplicative speckle
    gain = rng.uniform(0.45, 1.0, n)[:, None, None]
    offset = rng.uniform(0.0, 0.2, n)[:, None, None]
    speckle = rng.gamma(1 / max(noise, 1e-3) ** 2, max(noise, 1e-3) ** 2, image.shape) if noise else 1.0
    return np.clip(offset + gain * image * speckle, 0, 1).astype(np.float32)


@hookimpl
def register_datasets(register):
    register(SyntheticOCT)
