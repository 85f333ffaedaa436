"""Where a model looks: Grad-CAM (captum's ``LayerGradCam``) at the output of the model's last feature stage, for a
fixed set of test images, computed at the end of each cell while its model is in memory.

The images are the same for every variant and cell of a run (the first of each class, then the second..., every
class at least once: ``rows``), each explained for its true class, so the fold models' maps can be averaged and the
variants' maps compared side by side. The layer is the one a model plugin names (``Model.attribution_layer``), else
the output of the last feature stage: the last module to finish whose output is a spatial map at the resolution of
the model's last convolution (a ResNet's whole trunk, after its last residual sum; the seed CNN's last ReLU, after
batch norm). A model whose last spatial map is followed by token layers (a vision transformer's patch embedding)
or that has no convolution has no map, and says why. A map is kept at the layer's own resolution, scaled to [0, 1]
per image (float16: a few hundred bytes per image), and drawn by the report over the image the model saw.
"""

from __future__ import annotations

import numpy as np
import torch

from octbench.cell.device import as_float

PER_CLASS = 2  # explained images per class of the test split
MOST = 12  # and at most this many in all, unless the classes alone are more
METHOD = "Grad-CAM (captum LayerGradCam), true class"


class Unavailable(Exception):
    """Why a model has no activation map (said in the report as 'not available for this model')."""


def rows(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The test images every cell of a run explains: the first image of each class, then the second of each, up to
    ``PER_CLASS`` per class and ``MOST`` in all (so a run and its resumption agree without a seed); every class
    present gets one even where there are more classes than ``MOST``."""
    by_class = [np.flatnonzero(labels == c)[:PER_CLASS] for c in range(num_classes)]
    most = max(MOST, sum(1 for found in by_class if len(found)))
    chosen = [int(found[rank]) for rank in range(PER_CLASS) for found in by_class if rank < len(found)][:most]
    return np.sort(np.array(chosen, dtype=np.int64))


def feature_layer(
    model: torch.nn.Module, images: torch.Tensor, named: str | None = None
) -> tuple[str, torch.nn.Module]:
    """(name, module) whose output Grad-CAM explains: ``named`` (a model plugin's choice), else the last module to
    finish whose output is a map (B, C, H, W) at the resolution of the last convolution's output, found by one
    forward pass of an image. ``Unavailable`` when there is no convolution, or when a module after that map returns
    tokens (B, N, C): the map would be the model's first layer, not what decides the class."""
    modules = dict(model.named_modules())
    if named is not None:
        if named not in modules:
            raise Unavailable(f"the layer its plugin names, '{named}', is not a module of {type(model).__name__}")
        return named, modules[named]
    if not any(isinstance(m, torch.nn.Conv2d) for m in modules.values()):
        raise Unavailable(f"{type(model).__name__} has no 2-D convolution, so no spatial map to take a class map at")
    finished: list[tuple[str, torch.nn.Module, tuple[int, ...]]] = []

    def finish(name: str):
        def hook(module: torch.nn.Module, args: object, out: object) -> None:
            if isinstance(out, torch.Tensor):
                finished.append((name, module, tuple(out.shape)))

        return hook

    hooks = [module.register_forward_hook(finish(name)) for name, module in modules.items() if name]
    try:
        with torch.no_grad():
            model(as_float(images[:1], False))
    finally:
        for hook in hooks:
            hook.remove()
    convolutions = [i for i, (_, m, shape) in enumerate(finished) if isinstance(m, torch.nn.Conv2d)]
    side = finished[convolutions[-1]][2][-2:]
    last = max(i for i, (_, _, shape) in enumerate(finished) if len(shape) == 4 and shape[-2:] == side)
    tokens = next((name for name, _, shape in finished[last + 1 :] if len(shape) == 3), None)
    if tokens is not None:
        raise Unavailable(
            f"its last spatial map ('{finished[last][0]}') is followed by token layers ('{tokens}'): a map there "
            "would show its first layer, not what decides the class"
        )
    return finished[last][0], finished[last][1]


def grad_cam(
    model: torch.nn.Module, images: torch.Tensor, targets: np.ndarray, layer: str | None = None
) -> tuple[np.ndarray, str]:
    """(maps (N, h, w) float16 in [0, 1], the layer's name) for ``images`` as the model takes them (uint8 or
    float, N C H W) and each image's target class, at ``layer`` (a module's name) or ``feature_layer``'s choice."""
    try:
        from captum.attr import LayerGradCam
    except ImportError as exc:  # a core dependency; only a broken environment lacks it
        raise Unavailable(f"captum cannot be imported ({exc})") from None
    was_training = model.training
    model.eval()
    try:
        name, module = feature_layer(model, images, layer)
        with torch.enable_grad():
            x = as_float(images, False)
            target = torch.as_tensor(targets, device=x.device, dtype=torch.long)
            maps = LayerGradCam(model, module).attribute(x, target=target, relu_attributions=True)
    finally:
        model.train(was_training)
    if maps.dim() != 4:
        raise Unavailable(f"its layer '{name}' gives {tuple(maps.shape[1:])} per image, not a spatial map")
    maps = maps.detach().float().mean(dim=1)  # one map per image (a layer's channels are already summed)
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return (maps / peak).cpu().numpy().astype(np.float16), name


def upsampled(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) maps to (N, H, W) by bilinear interpolation, for drawing over the images."""
    t = torch.as_tensor(np.asarray(maps, np.float32))[:, None]
    return torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()
