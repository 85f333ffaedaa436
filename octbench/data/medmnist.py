"""MedMNIST 2D files: names, addresses and checksums; reading the official npz layout.

``medmnist_info.json`` is the 2D single-label part of ``medmnist.INFO`` (medmnist 3.0.2, Apache-2.0): flags,
classes, channels, split sizes, and each size's address and MD5. octbench carries it so that it needs neither the
medmnist package (whose ``download()`` needs torchvision and, through it, a CUDA torch) nor anything else to fetch
and verify the files, which ``octbench.data.files.download`` does. ``INFO`` is that table, by flag.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from octbench.console import download_progress
from octbench.data.files import download, verified_md5
from octbench.errors import DataError
from octbench.technique import Splits

SUPPORTED_TASKS = ("multi-class", "binary-class", "ordinal-regression")
SIZES = (28, 64, 128, 224)


INFO: dict[str, dict[str, Any]] = json.loads((Path(__file__).parent / "medmnist_info.json").read_text())


def info() -> dict[str, dict[str, Any]]:
    """The 2D single-label MedMNIST flags."""
    return {flag: entry for flag, entry in INFO.items() if entry.get("task") in SUPPORTED_TASKS}


def flag_info(flag: str) -> dict[str, Any]:
    table = info()
    if flag not in table:
        raise DataError(f"'{flag}' is not a single-label 2D MedMNIST flag. Known: {', '.join(sorted(table))}.")
    return table[flag]


def sizes(flag: str) -> list[int]:
    entry = flag_info(flag)
    return [s for s in SIZES if ("url" if s == 28 else f"url_{s}") in entry]


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """``--data-dir``, else ``OCTBENCH_DATA_DIR``, else medmnist's default root (``~/.medmnist``)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("OCTBENCH_DATA_DIR"):
        return Path(os.environ["OCTBENCH_DATA_DIR"]).expanduser()
    return Path.home() / ".medmnist"


def file_name(flag: str, size: int) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def source(flag: str, size: int) -> tuple[str, str]:
    """(url, md5) for one flag and size."""
    entry = flag_info(flag)
    suffix = "" if size == 28 else f"_{size}"
    if f"url{suffix}" not in entry:
        raise DataError(f"{flag} has no {size}x{size} release; sizes: {', '.join(map(str, sizes(flag)))}.")
    return entry[f"url{suffix}"], entry[f"MD5{suffix}"]


def fix_hint(flag: str, size: int, directory: Path) -> str:
    url, _ = source(flag, size)
    return (
        f"Download {url} and save it as {directory / file_name(flag, size)} "
        f"(or point --data-dir / OCTBENCH_DATA_DIR at a folder holding it), or run `octbench data fetch {flag}`."
    )


def locate(flag: str, size: int, directory: Path, *, fetch: bool = True, progress: bool = True) -> tuple[Path, str]:
    """The verified local file (downloading it when absent and ``fetch``) and its MD5."""
    url, md5 = source(flag, size)
    path = directory / file_name(flag, size)
    fix = fix_hint(flag, size, directory)
    if path.exists():
        return path, verified_md5(path, md5, fix=f"Delete it and fetch it again. {fix}")
    if not fetch:
        raise DataError(f"{path} does not exist. {fix}")
    if progress:
        with download_progress(f"downloading {file_name(flag, size)}") as update:
            download(url, path, md5, fix=fix, progress=update)
    else:
        download(url, path, md5, fix=fix)
    return path, md5


def read(path: Path, flag: str, md5: str) -> Splits:
    """The official splits from a MedMNIST npz file; images become (N, H, W, C) uint8, labels (N,) int64."""
    try:
        with np.load(path) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read {path} as a MedMNIST npz file ({exc}). Delete it and fetch it again.") from None
    missing = [f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels") if f"{s}_{k}" not in arrays]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}: not a MedMNIST file. Delete it and fetch it again.")
    entry = flag_info(flag)
    names = [entry["label"][str(i)] for i in range(len(entry["label"]))]
    parts = {}
    for split in ("train", "val", "test"):
        images = arrays[f"{split}_images"]
        if images.ndim == 3:
            images = images[..., None]
        parts[f"{split}_images"] = np.ascontiguousarray(images, dtype=np.uint8)
        parts[f"{split}_labels"] = arrays[f"{split}_labels"].reshape(-1).astype(np.int64)
    return Splits(**parts, class_names=names, source=str(path), md5=md5, meta={"flag": flag, "task": entry["task"]})
