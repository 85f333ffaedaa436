"""Where a model looks: Grad-CAM (captum's ``LayerGradCam``) at the model's last convolution, for a fixed set of
test images, computed at the end of each cell while its model is in memory.

The images are the same for every variant and cell of a run (a few per class, ``rows``), each explained for its true
class, so the fold models' maps can be averaged and the variants' maps compared side by side. A map is kept at the
convolution's own resolution, scaled to [0, 1] per image (float16: a few hundred bytes per image), and drawn over
the image by the report. A model without a convolution has no map; the cell says why in its settings.
"""

from __future__ import annotations

import numpy as np
import torch

from octbench.device import as_float

PER_CLASS = 2  # explained images per class of the test split
MOST = 12  # and at most this many in all
METHOD = "Grad-CAM (captum LayerGradCam), true class"


class Unavailable(Exception):
    """Why a model has no activation map (said in the report as 'not available for this model')."""


def rows(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The test images every cell of a run explains: the first ``PER_CLASS`` of each class (so a run and its
    resumption agree without a seed), at most ``MOST``."""
    chosen = [np.flatnonzero(labels == c)[:PER_CLASS] for c in range(num_classes)]
    return np.sort(np.concatenate(chosen))[:MOST].astype(np.int64) if chosen else np.zeros(0, np.int64)


def last_convolution(model: torch.nn.Module) -> tuple[str, torch.nn.Module]:
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    if not found:
        raise Unavailable(f"{type(model).__name__} has no 2-D convolution to take a class-activation map at")
    return found[-1]


def grad_cam(model: torch.nn.Module, images: torch.Tensor, targets: np.ndarray) -> tuple[np.ndarray, str]:
    """(maps (N, h, w) float16 in [0, 1], the layer's name) for ``images`` as the model takes them (uint8 or
    float, N C H W) and each image's target class."""
    try:
        from captum.attr import LayerGradCam
    except ImportError as exc:  # a core dependency; only a broken environment lacks it
        raise Unavailable(f"captum cannot be imported ({exc})") from None
    name, layer = last_convolution(model)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = as_float(images, False)
            target = torch.as_tensor(targets, device=x.device, dtype=torch.long)
            maps = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    finally:
        model.train(was_training)
    maps = maps.detach().float().mean(dim=1)  # one map per image (a layer's channels are already summed)
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return (maps / peak).cpu().numpy().astype(np.float16), name


def upsampled(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) maps to (N, H, W) by bilinear interpolation, for drawing over the images."""
    t = torch.as_tensor(np.asarray(maps, np.float32))[:, None]
    return torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()
