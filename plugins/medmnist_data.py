"""Every single-label MedMNIST 2D flag (octmnist, breastmnist, retinamnist, ...) as a dataset."""

from __future__ import annotations

from typing import Literal

import click
from pydantic import Field

from octbench import hookimpl
from octbench.data import medmnist
from octbench.errors import OctbenchError
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


# --- `octbench data`: the MedMNIST files, with the dataset they serve rather than in the core command line ---------


@click.group()
def data() -> None:
    """MedMNIST data files: list, fetch, verify."""


_data_dir = click.option("--data-dir", type=click.Path(file_okay=False), help="Folder with MedMNIST .npz files.")


@data.command("list")
@_data_dir
def data_list(data_dir) -> None:
    """Every 2D single-label MedMNIST flag, its sizes and which files are present."""

    directory = medmnist.data_dir(data_dir)
    click.echo(f"data directory: {directory}")
    for flag, entry in sorted(medmnist.info().items()):
        present = [str(s) for s in medmnist.sizes(flag) if (directory / medmnist.file_name(flag, s)).exists()]
        n = entry["n_samples"]
        click.echo(
            f"  {flag:<16} {entry['task']:<19} {len(entry['label'])} classes  {entry['n_channels']} ch  "
            f"train/val/test {n['train']}/{n['val']}/{n['test']}  present: {', '.join(present) or '-'}"
        )


@data.command("fetch")
@click.argument("flag")
@click.option("--size", type=click.Choice(["28", "64", "128", "224"]), default="28", show_default=True)
@_data_dir
def data_fetch(flag, size, data_dir) -> None:
    """Download FLAG's file (checked against medmnist's MD5) into the data directory."""

    path, md5 = medmnist.locate(flag, int(size), medmnist.data_dir(data_dir), fetch=True, progress=True)
    click.echo(f"{path} (MD5 {md5} verified)")


@data.command("verify")
@_data_dir
def data_verify(data_dir) -> None:
    """Check the MD5 of every MedMNIST file in the data directory."""
    from octbench.data.files import verified_md5
    from octbench.errors import DataError

    directory = medmnist.data_dir(data_dir)
    checked, bad = 0, []
    for flag in sorted(medmnist.info()):
        for size in medmnist.sizes(flag):
            path = directory / medmnist.file_name(flag, size)
            if not path.exists():
                continue
            checked += 1
            try:
                verified_md5(path, medmnist.source(flag, size)[1])
                click.echo(f"ok   {path}")
            except DataError as exc:
                bad.append(str(exc))
                click.echo(f"BAD  {path}")
    if not checked:
        raise OctbenchError(f"no MedMNIST files in {directory}. Fetch one with `octbench data fetch octmnist`.")
    if bad:
        raise OctbenchError(f"{len(bad)} of {checked} files failed: " + " | ".join(bad))
    click.echo(f"{checked} files verified")


@hookimpl
def register_commands(cli):
    cli.add_command(data)
