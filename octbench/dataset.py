"""A run's dataset in this process: loaded once through its plugin, checked, and read-only from then on (or handed
over by an executor that loaded it elsewhere)."""

from __future__ import annotations

from octbench.cell import validate
from octbench.cell.validate import frozen
from octbench.errors import OctbenchError
from octbench.plugins import PluginHost
from octbench.suite import PluginRef, Suite
from octbench.technique import Splits

_DATA: dict[tuple[str, str, str | None], Splits] = {}


def _data_key(source: Suite | PluginRef, data_dir: str | None) -> tuple[str, str, str | None]:
    ref = _ref(source)
    return (ref.name or "", repr(sorted(ref.params.items())), data_dir)


def _ref(source: Suite | PluginRef) -> PluginRef:
    """The dataset a suite names, or a dataset named on its own (``octbench audit``)."""
    return source.dataset if isinstance(source, Suite) else source


def provide_data(suite: Suite, data_dir: str | None, splits: Splits) -> None:
    """Hand this process the suite's dataset as the driver loaded and checked it (an executor on another machine
    ships it instead of loading it there)."""
    _DATA[_data_key(suite, data_dir)] = splits


def provided(refs: list[PluginRef], data_dir: str | None) -> dict[tuple[str, str, str | None], Splits]:
    """The datasets ``refs`` name as this process loaded them, for an executor to ship (``provide_datasets``)."""
    return {_data_key(ref, data_dir): _DATA[_data_key(ref, data_dir)] for ref in refs}


def provide_datasets(datasets: dict[tuple[str, str, str | None], Splits]) -> None:
    """Hand this process datasets as the driver loaded them (``provided``), so its cells load none again."""
    _DATA.update(datasets)


def check_same_samples(splits: Splits, reference: Splits, name: str) -> None:
    """A variant's dataset (another size, say) must hold the suite's images in the same order: the same classes and
    labels in every split, so its folds are the suite's and its test predictions pair with every other variant's."""
    if splits.class_names != reference.class_names:
        raise OctbenchError(f"{name}: classes {splits.class_names} differ from the suite's {reference.class_names}")
    for split in ("train", "val", "test"):
        mine, theirs = getattr(splits, f"{split}_labels"), getattr(reference, f"{split}_labels")
        if len(mine) != len(theirs) or (mine != theirs).any():
            raise OctbenchError(
                f"{name}: its {split} labels differ from the suite's dataset ({len(mine):,} against {len(theirs):,} "
                "images, or another order): a variant may change how the images are given (their size), not which "
                "images, or its folds would not pair with the other variants'"
            )


def load_data(source: Suite | PluginRef, host: PluginHost, data_dir: str | None, progress: bool = False) -> Splits:
    """The suite's dataset (or the one named), loaded once per process, checked, and read-only from then on."""
    ref = _ref(source)
    key = _data_key(source, data_dir)
    if key not in _DATA:
        dataset = host.create("dataset", ref.name, ref.params)
        try:
            splits = dataset.load(data_dir, progress=progress)
        except OctbenchError:
            raise
        except Exception as exc:  # a dataset plugin's own failure is still the user's input problem
            raise OctbenchError(f"dataset '{ref.name}' failed to load: {type(exc).__name__}: {exc}") from None
        if not isinstance(splits, Splits):
            raise OctbenchError(f"dataset '{ref.name}': load() must return octbench.technique.Splits.")
        validate.check_splits(splits, ref.name)
        for name in ("train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels"):
            setattr(splits, name, frozen(getattr(splits, name)))
        for array in splits.pool:
            frozen(array)
        _DATA[key] = splits
    return _DATA[key]
