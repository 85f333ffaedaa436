"""Every single-label MedMNIST 2D flag (octmnist, breastmnist, retinamnist, ...) as a dataset."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from octbench import hookimpl
from octbench.data import medmnist
from octbench.params import Params
from octbench.technique import Dataset, Splits


class MedMNISTDataset(Dataset):
    """A MedMNIST 2D dataset with its official train/val/test splits."""

    flag: str

    class Params(Params):
        size: Literal[28, 64, 128, 224] = Field(28, description="image side in pixels")
        download: bool = Field(True, description="fetch the file when it is not in the data directory")

    def load(self, data_dir: str | None, *, progress: bool = False) -> Splits:
        directory = medmnist.data_dir(data_dir)
        path, md5 = medmnist.locate(
            self.flag, self.params.size, directory, fetch=self.params.download, progress=progress
        )
        return medmnist.read(path, self.flag, md5)


def _dataset_class(flag: str, entry: dict) -> type[MedMNISTDataset]:
    classes = len(entry["label"])
    doc = f"MedMNIST {entry['python_class']}: {entry['task']}, {classes} classes, {entry['n_channels']} channel(s)."
    return type(entry["python_class"], (MedMNISTDataset,), {"name": flag, "flag": flag, "__doc__": doc})


@hookimpl
def register_datasets(register):
    for flag, entry in medmnist.info().items():
        register(_dataset_class(flag, entry))
