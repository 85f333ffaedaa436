"""Fold assignment: a function of the pool's labels and the seed only, so every variant sees the same folds."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from octbench.errors import OctbenchError
from octbench.suite import MAX_SEED, QUICK_POOL, Suite


def cell_seed(seed: int, fold: int) -> int:
    """The seed of a (seed, fold) cell's inner split, initialisation, shuffling, augmentation and resampling: the same
    for every variant, and below 2**32 as numpy and scikit-learn require. ``seed * 1000 + fold``, as it has always
    been, while that fits; for a larger seed (up to 2**32 - 1 is valid) a hash of the two, where ``seed * 1000 + fold``
    overflowed and failed every cell."""
    plain = seed * 1_000 + fold
    if plain <= MAX_SEED:
        return plain
    return int(np.random.SeedSequence([seed, fold]).generate_state(1)[0])


def quick_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A stratified subset of the pool's indices (all of them when the pool is small)."""
    if len(labels) <= size:
        return np.arange(len(labels))
    keep, _ = train_test_split(np.arange(len(labels)), train_size=size, stratify=labels, random_state=seed)
    return np.sort(keep)


def pool_rows(suite: Suite, labels: np.ndarray, seed: int) -> np.ndarray:
    """The rows of the pool that ``seed``'s cells fold: every row, or in a quick run a stratified subset drawn
    with the seed. The plan's checks, every cell and the provenance all take it from here."""
    if suite.quick:
        return quick_subset(labels, QUICK_POOL, seed)
    return np.arange(len(labels))


def check_foldable(labels: np.ndarray, folds: int, class_names: list[str]) -> None:
    counts = np.bincount(labels, minlength=len(class_names))
    small = [f"'{class_names[c]}' ({counts[c]})" for c in range(len(counts)) if counts[c] < folds]
    if small:
        raise OctbenchError(
            f"stratified {folds}-fold cross-validation needs at least {folds} images of every class in the pool; "
            f"too few: {', '.join(small)}. Use fewer folds or a larger dataset."
        )


def fold_indices(labels: np.ndarray, folds: int, seed: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(training part, held-out part) of ``fold`` for ``seed``, as indices into ``labels``."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for index, (train, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        if index == fold:
            return train, held_out
    raise ValueError(f"fold {fold} out of range for {folds} folds")


def inner_split(
    train: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int, fold: int
) -> tuple[np.ndarray, np.ndarray]:
    """A stratified inner validation split of a fold's training part, for early stopping and LR schedules."""
    y = labels[train]
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    inner_train, inner_val = train_test_split(
        train, test_size=val_fraction, stratify=stratify, random_state=cell_seed(seed, fold)
    )
    return np.sort(inner_train), np.sort(inner_val)
