"""Checks at the boundary between octbench and a plugin, in the manner of scikit-learn's ``check_X_y``: every shape,
dtype, count and label a plugin hands back is checked where it arrives, and a problem names the plugin and the fix.

Arrays octbench hands to plugins are read-only (``frozen``): a plugin that writes into its input would otherwise
corrupt the shared, cached pool for every later cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from octbench.errors import CellFailed, DataError


def frozen(array: np.ndarray) -> np.ndarray:
    """``array``, marked read-only (a view when it is not ours to mark)."""
    if array.flags.writeable and array.flags.owndata:
        array.setflags(write=False)
        return array
    view = array.view()
    view.setflags(write=False)
    return view


def _images_problem(images: Any) -> str | None:
    if not isinstance(images, np.ndarray):
        return f"a numpy array, not {type(images).__name__}"
    if images.ndim != 4:
        return f"shaped (N, H, W, C), not {images.shape}"
    if images.dtype not in (np.uint8, np.float32):
        return f"uint8 or float32, not {images.dtype}"
    if images.dtype == np.float32 and not np.isfinite(images).all():
        return "finite (it holds NaN or infinity)"
    return None


def _labels_problem(labels: Any, count: int, num_classes: int) -> str | None:
    if not isinstance(labels, np.ndarray) or labels.ndim != 1:
        return f"a 1-D numpy array, not {getattr(labels, 'shape', type(labels).__name__)}"
    if not np.issubdtype(labels.dtype, np.integer):
        return f"integers, not {labels.dtype}"
    if len(labels) != count:
        return f"one per image: {len(labels)} labels for {count} images"
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        return f"class indices in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}"
    return None


def check_splits(splits: Any, dataset: str) -> None:
    """A dataset plugin's output: three splits of images and labels that agree with each other and the classes."""
    where = f"dataset '{dataset}'"
    names = splits.class_names
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) and n for n in names):
        raise DataError(f"{where}: class_names must be a list of non-empty strings, got {names!r:.200}.")
    if len(set(names)) != len(names):
        raise DataError(f"{where}: class_names repeats a name: {names!r:.200}.")
    if len(names) < 2:
        raise DataError(f"{where}: a classification needs at least two classes; class_names is {names!r:.200}.")
    shapes = set()
    for split in ("train", "val", "test"):
        images, labels = getattr(splits, f"{split}_images"), getattr(splits, f"{split}_labels")
        problem = _images_problem(images)
        if problem is None and images.shape[-1] not in (1, 3):
            problem = f"of 1 or 3 channels, not {images.shape[-1]}"
        if problem is None:
            problem = _labels_problem(labels, len(images), len(names))
            problem = problem and f"labels: {problem}"
        if problem:
            raise DataError(f"{where}: {split} split must be {problem}. Fix the dataset plugin's load().")
        shapes.add(images.shape[1:])
    if len(shapes) > 1:
        raise DataError(f"{where}: the splits have different image shapes {sorted(shapes)}; they must agree.")
    pool = np.concatenate([splits.train_labels, splits.val_labels])
    if len(np.unique(pool)) < 2:
        raise DataError(f"{where}: the train and val splits hold a single class; nothing can be compared.")


def check_transformed(out: Any, before: np.ndarray, plugin: str) -> np.ndarray:
    """A preprocessor's ``transform`` output: images, one per input image."""
    problem = _images_problem(out)
    if problem is None and len(out) != len(before):
        problem = f"one image per input image ({len(out)} for {len(before)})"
    if problem:
        raise CellFailed(f"preprocessor '{plugin}' must return images {problem}.")
    return out


def check_resampled(out: Any, before: np.ndarray, num_classes: int, plugin: str) -> tuple[np.ndarray, np.ndarray]:
    """A resampler's ``fit_resample`` output: images shaped as its input, with one label each, of known classes."""
    if not isinstance(out, tuple) or len(out) != 2:
        raise CellFailed(f"resampler '{plugin}' must return (images, labels), not {type(out).__name__}.")
    images, labels = out
    problem = _images_problem(images)
    if problem is None and images.shape[1:] != before.shape[1:]:
        problem = f"shaped like its input {before.shape[1:]} per image, not {images.shape[1:]}"
    if problem:
        raise CellFailed(f"resampler '{plugin}' must return images {problem}.")
    problem = _labels_problem(labels, len(images), num_classes)
    if problem:
        raise CellFailed(f"resampler '{plugin}' must return labels {problem}.")
    if len(labels) == 0:
        raise CellFailed(f"resampler '{plugin}' returned no images to train on.")
    return images, labels


def check_logits(logits: Any, count: int, num_classes: int, model: str) -> None:
    """A model's output on a batch: (count, num_classes) finite logits."""
    shape = tuple(getattr(logits, "shape", ()))
    if shape != (count, num_classes):
        raise CellFailed(
            f"model '{model}' must map a batch of {count} images to ({count}, {num_classes}) logits, one per class; "
            f"it returned shape {shape}."
        )
    if not bool(np.isfinite(logits).all()):
        raise CellFailed(f"model '{model}' produced non-finite logits (NaN or infinity) on evaluation images.")
