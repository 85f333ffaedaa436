"""ResNet-18 and ResNet-50 as in MedMNIST's baselines: a 3x3 stride-1 stem without max-pool at 28x28.

At 64 px and above the ImageNet stem (7x7 stride 2 and max-pool) is used, as MedMNIST does for its larger sizes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal

from octbench_plugins import weights as start
from pydantic import Field, model_validator
from torch import nn

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Model


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(inplanes, planes * self.expansion, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(inplanes, planes * 4, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


def _shortcut(inplanes: int, outplanes: int, stride: int) -> nn.Module:
    if stride == 1 and inplanes == outplanes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride, bias=False), nn.BatchNorm2d(outplanes))


class ResNet(nn.Module):
    def __init__(self, block, layers: list[int], in_channels: int, num_classes: int, small_stem: bool) -> None:
        super().__init__()
        if small_stem:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True)
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(True),
                nn.MaxPool2d(3, 2, 1),
            )
        stages, inplanes = [], 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if i == 0 else 2
            stage = [block(inplanes, planes, stride)]
            inplanes = planes * block.expansion
            stage += [block(inplanes, planes) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def torchvision_names(key: str) -> str:
    """A torchvision (or timm) ResNet tensor name as the built-in ResNet calls it."""
    key = re.sub(r"^conv1\.", "stem.0.", key)
    key = re.sub(r"^bn1\.", "stem.1.", key)
    key = re.sub(r"^layer(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.", key)
    return key.replace(".downsample.", ".shortcut.")


class _ResNetModel(Model):
    image_sizes = (28, 64)
    block: type[nn.Module]
    layers: list[int]

    class Params(Params):
        imagenet_url: ClassVar[str] = ""  # torchvision's ImageNet checkpoint (torch's hub cache keeps its file name)

        stem: Literal["auto", "small", "imagenet"] = Field(
            "auto",
            description="auto: 3x3 stride-1 stem below 64 px (MedMNIST 28), ImageNet stem from 64 px or when "
            "starting from ImageNet weights",
        )
        pretrained: bool = Field(
            False,
            description="start from torchvision's ImageNet weights, read from torch's hub cache (never downloaded)",
        )
        weights: str | None = Field(
            None, description="start from a local checkpoint (this model's, or a torchvision/timm ResNet's)"
        )
        freeze: bool = Field(False, description="train the classifier only (a linear probe of the start weights)")

        @model_validator(mode="after")
        def _one_start(self):
            self.checkpoint()  # a missing file is found when the suite is checked, before any cell
            return self

        def checkpoint(self) -> Path | None:
            """The file the model starts from, or None (``weights.start_file``)."""
            return start.start_file(self.pretrained, self.weights, self.freeze, self._cached_imagenet)

        def _cached_imagenet(self) -> Path:
            file = start.torch_hub_file(self.imagenet_url.rsplit("/", 1)[1])
            if not file.is_file():
                raise ValueError(
                    f"pretrained: torchvision's ImageNet weights are not on this machine: download "
                    f"{self.imagenet_url} to {file} (nothing is downloaded during a run), or give weights: PATH"
                )
            return file

    def notes(self, variant):
        return start.normalisation_note(self.params.checkpoint(), variant)

    def input_files(self):
        file = self.params.checkpoint()
        return [file] if file else []

    def build(self, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        file = self.params.checkpoint()
        state = start.read_checkpoint(file) if file else None
        stem = self.params.stem
        if stem == "auto" and state is not None:  # the checkpoint's first convolution decides
            first = state.get("conv1.weight", state.get("stem.0.weight"))
            stem = "imagenet" if first is not None and first.shape[-1] == 7 else "small"
        small = stem == "small" or (stem == "auto" and image_size < 64)
        model = ResNet(self.block, self.layers, in_channels, num_classes, small)
        if state is not None:
            start.load_into(model, state, source=str(file), classifier="fc.", first_conv="stem.0.weight",
                            rename=torchvision_names)  # fmt: skip
            if self.params.freeze:
                start.freeze_all_but(model, "fc.")
        return model


class ResNet18(_ResNetModel):
    """ResNet-18 (11M parameters), MedMNIST's baseline adaptation."""

    name = "resnet18"
    block, layers = BasicBlock, [2, 2, 2, 2]

    class Params(_ResNetModel.Params):
        imagenet_url: ClassVar[str] = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


class ResNet50(_ResNetModel):
    """ResNet-50 (23.5M parameters), MedMNIST's baseline adaptation."""

    name = "resnet50"
    block, layers = Bottleneck, [3, 4, 6, 3]

    class Params(_ResNetModel.Params):
        imagenet_url: ClassVar[str] = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"


@hookimpl
def register_models(register):
    register(ResNet18)
    register(ResNet50)
