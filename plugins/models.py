"""Models: the seed project's CNN, exactly, and the configurable family it belongs to."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Model


def conv_net(
    in_channels: int,
    num_classes: int,
    image_size: int,
    widths: list[int],
    batchnorm: bool,
    dropout: float,
    hidden: int,
) -> nn.Sequential:
    """Conv3x3 (padding 1) [- BatchNorm] - ReLU - MaxPool2 blocks, then Flatten - Linear - ReLU - Dropout - Linear."""
    layers: list[nn.Module] = []
    channels, side = in_channels, image_size
    for width in widths:
        layers.append(nn.Conv2d(channels, width, 3, padding=1))
        if batchnorm:
            layers.append(nn.BatchNorm2d(width))
        layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        channels, side = width, side // 2
    if side < 1:
        raise ValueError(f"{len(widths)} pooling blocks shrink a {image_size}px image to nothing; use fewer widths")
    layers += [nn.Flatten(), nn.Linear(channels * side * side, hidden), nn.ReLU(inplace=True)]
    layers += [nn.Dropout(dropout), nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


class CNN(Model):
    """Configurable plain CNN: conv blocks of the given widths, optional batch norm, dropout in the head."""

    name = "cnn"
    image_sizes = (28, 64)

    class Params(Params):
        widths: list[int] = Field([32, 64, 128], min_length=1, max_length=6, description="channels per block")
        batchnorm: bool = Field(True, description="BatchNorm after each convolution")
        dropout: float = Field(0.5, ge=0, lt=1, description="dropout before the last linear layer")
        hidden: int = Field(64, ge=1, description="units in the hidden linear layer")

    def build(self, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        p = self.params
        return conv_net(in_channels, num_classes, image_size, list(p.widths), p.batchnorm, p.dropout, p.hidden)


class SeedCNN(Model):
    """The seed project's CNN exactly: 3 x (Conv3x3-BN-ReLU-MaxPool) 32/64/128, Linear 64, Dropout 0.5 (167k params)."""

    name = "seed-cnn"
    image_sizes = (28, 64)

    def build(self, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        return conv_net(in_channels, num_classes, image_size, [32, 64, 128], True, 0.5, 64)


@hookimpl
def register_models(register):
    register(CNN)
    register(SeedCNN)
