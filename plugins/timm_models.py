"""``timm``: any timm model by name, built without pretrained weights (nothing is downloaded at run time)."""

from __future__ import annotations

from pydantic import Field, field_validator

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Model

MISSING = "needs the optional timm package (and a torchvision matching your torch): pip install 'octbench[timm]'"


def _timm():
    try:
        import timm
    except ImportError:
        return None
    return timm


class Timm(Model):
    """Any timm model by name (optional dependency), with in/out channels from the dataset."""

    name = "timm"

    class Params(Params):
        model_name: str = Field("resnet18", description="a name from timm.list_models()")
        drop_rate: float = Field(0.0, ge=0, lt=1, description="classifier dropout")

        @field_validator("model_name")
        @classmethod
        def _exists(cls, name):
            timm = _timm()
            if timm is None:
                raise ValueError(MISSING)
            if name not in timm.list_models():
                raise ValueError("not a timm model name; see timm.list_models()")
            return name

    def build(self, in_channels: int, num_classes: int, image_size: int):
        timm = _timm()
        if timm is None:
            raise RuntimeError(f"timm {MISSING}")
        return timm.create_model(
            self.params.model_name,
            pretrained=False,
            in_chans=in_channels,
            num_classes=num_classes,
            drop_rate=self.params.drop_rate,
        )


@hookimpl
def register_models(register):
    register(Timm)
