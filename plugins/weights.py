"""Starting a model from weights a user already has: a local checkpoint, or pretrained weights found in a cache on
this machine. Nothing here downloads: where no copy is found, the error names the file to fetch and where to put it.

A checkpoint is a ``torch.save``d state dict (or a dict holding one under ``state_dict``/``model``), or a
``.safetensors`` file. Its tensors are matched to the model by name after ``rename`` (a torchvision or timm ResNet's
names map to the built-in ResNets'); the classifier is always left at its fresh initialisation (the number of
classes differs from the checkpoint's), and the first convolution's input channels are adapted to the data's, as
timm does: summed over RGB for grayscale input, repeated and rescaled for more channels.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from octbench.errors import CellFailed


def start_file(pretrained: bool, weights: str | None, freeze: bool, find_pretrained: Callable[[], Path]) -> Path | None:
    """The file a model's parameters say it starts from (``weights``, or ``find_pretrained()`` for
    ``pretrained``), or None; ``ValueError`` with what to do for a missing file or parameters that contradict."""
    if pretrained and weights:
        raise ValueError("give pretrained or weights, not both")
    if freeze and not (pretrained or weights):
        raise ValueError("freeze needs start weights (pretrained or weights): frozen random ones learn nothing")
    if weights:
        file = Path(weights).expanduser()
        if not file.is_file():
            raise ValueError(f"weights: no checkpoint at {file}")
        return file
    return find_pretrained() if pretrained else None


NO_NORMALIZE = (
    "it starts from pretrained weights, which expect images standardised as they were in pre-training (ImageNet: "
    "mean 0.485/0.456/0.406, SD 0.229/0.224/0.225), and octbench feeds images scaled to [0, 1]: add the normalize "
    "preprocessor (it standardises with the training part's mean and SD) or compare with and without it"
)


def normalisation_note(starts_from: Path | None, variant: Any) -> list[str]:
    """The note for a model that starts from weights in a variant with nothing that standardises its images."""
    standardised = any(ref.name == "normalize" for ref in getattr(variant, "preprocessors", []))
    return [NO_NORMALIZE] if starts_from is not None and not standardised else []


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``; a clear error when the file is missing or holds none."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CellFailed(f"weights: no checkpoint at {file}: save one there (torch.save(model.state_dict(), ...))")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(file))
        else:
            loaded = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CellFailed(f"weights: {file} could not be read as a checkpoint: {type(exc).__name__}: {exc}") from None
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CellFailed(f"weights: {file} holds no state dict (a mapping of names to tensors)")
    return {re.sub(r"^(module|_orig_mod)\.", "", k): v for k, v in loaded.items()}


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first convolution's weight for ``in_channels`` inputs (timm's rule): RGB summed for one channel,
    repeated and scaled by 3/in_channels for more."""
    have = weight.shape[1]
    if have == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // have)
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (have / in_channels)


def load_into(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    source: str,
    classifier: str,
    first_conv: str,
    rename: Callable[[str], str] = lambda key: key,
) -> dict[str, int]:
    """Copy ``state`` into ``model`` by name (after ``rename``), leaving the classifier (names starting with
    ``classifier``) fresh and adapting the first convolution's input channels. Every other tensor of the model must
    be in the checkpoint with its shape, or the error says which is not. Returns counts of what was loaded."""
    own = model.state_dict()
    state = {rename(k): v for k, v in state.items()}
    loaded: dict[str, torch.Tensor] = {}
    for name, tensor in own.items():
        if name.startswith(classifier):
            continue
        if name not in state:
            if name.endswith("num_batches_tracked"):
                continue
            raise CellFailed(f"weights: {source} has no tensor for the model's '{name}': is it this architecture?")
        value = state[name]
        if name == first_conv and value.ndim == 4:
            value = adapt_input_conv(value, tensor.shape[1])
        if tuple(value.shape) != tuple(tensor.shape):
            raise CellFailed(
                f"weights: '{name}' is {tuple(value.shape)} in {source}, the model's is {tuple(tensor.shape)}"
                + (" (a 7x7 ImageNet stem: set the model's stem: imagenet)" if name == first_conv else "")
            )
        loaded[name] = value.to(tensor.dtype)
    model.load_state_dict(loaded, strict=False)
    return {"loaded": len(loaded), "fresh": sum(1 for k in own if k.startswith(classifier))}


def freeze_all_but(model: nn.Module, classifier: str | tuple[str, ...]) -> None:
    """A linear probe: every parameter but the classifier's (names starting with ``classifier``, or any of several
    prefixes) stops learning (BatchNorm statistics still follow the training batches, as in timm's and torchvision's
    fine-tuning recipes unless the model is put in eval)."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(classifier))


def torch_hub_file(filename: str) -> Path:
    """Where torch (and timm, for weights published by URL) caches a downloaded checkpoint."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename
