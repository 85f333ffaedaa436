"""``timm``: any timm model by name, from scratch or from weights already on this machine (nothing is downloaded).

``pretrained: true`` reads the model's default ImageNet weights from the Hugging Face cache (where timm keeps what it
downloaded) or torch's hub cache; ``weights: PATH`` reads a local checkpoint. timm loads either (its
``pretrained_cfg_overlay`` ``file``), adapting the first convolution to the data's channels and leaving the
classifier fresh when the number of classes differs.
"""

from __future__ import annotations

from pathlib import Path

from octbench_plugins import weights as start
from pydantic import Field, field_validator, model_validator

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
        pretrained: bool = Field(
            False, description="start from the model's pretrained weights in the Hugging Face or torch hub cache"
        )
        weights: str | None = Field(None, description="start from a local checkpoint of this timm model")
        freeze: bool = Field(False, description="train the classifier only (a linear probe of the start weights)")

        @field_validator("model_name")
        @classmethod
        def _exists(cls, name):
            timm = _timm()
            if timm is None:
                raise ValueError(MISSING)
            if name not in timm.list_models():
                raise ValueError("not a timm model name; see timm.list_models()")
            return name

        @model_validator(mode="after")
        def _one_start(self):
            self.checkpoint()  # a missing file is found when the suite is checked, before any cell
            return self

        def checkpoint(self) -> Path | None:
            """The file the model starts from, or None (``weights.start_file``)."""
            return start.start_file(
                self.pretrained, self.weights, self.freeze, lambda: cached_pretrained(self.model_name)
            )

    def attribution_layer(self, model):
        """timm's own last feature stage (``feature_info``): a CNN's last stage, a vision transformer's last block
        (whose tokens are no spatial map, so the report says it has none)."""
        info = getattr(model, "feature_info", None)
        return info[-1]["module"] if info else None

    def notes(self, variant):
        return start.normalisation_note(self.params.checkpoint(), variant)

    def input_files(self):
        file = self.params.checkpoint()
        return [file] if file else []

    def build(self, in_channels: int, num_classes: int, image_size: int):
        timm = _timm()
        if timm is None:
            raise RuntimeError(f"timm {MISSING}")
        file = self.params.checkpoint()
        model = timm.create_model(
            self.params.model_name,
            pretrained=file is not None,
            pretrained_cfg_overlay={"file": str(file)} if file else None,
            in_chans=in_channels,
            num_classes=num_classes,
            drop_rate=self.params.drop_rate,
        )
        if self.params.freeze:
            # a distilled DeiT has two classifiers: ('head', 'head_dist')
            heads = model.pretrained_cfg.get("classifier", "fc")
            start.freeze_all_but(model, tuple(f"{head}." for head in ([heads] if isinstance(heads, str) else heads)))
        return model


def cached_pretrained(model_name: str) -> Path:
    """The model's default pretrained weights as a file on this machine, looked up without any network access:
    the Hugging Face cache (``huggingface_hub.try_to_load_from_cache``), then torch's hub cache."""
    timm = _timm()
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ValueError(f"pretrained: timm has no pretrained weights for {model_name}")
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str):
                return Path(found)
        where = f"https://huggingface.co/{cfg.hf_hub_id} (huggingface-cli download {cfg.hf_hub_id})"
    else:
        file = start.torch_hub_file(cfg.url.rsplit("/", 1)[1])
        if file.is_file():
            return file
        where = f"{cfg.url} to {file}"
    raise ValueError(
        f"pretrained: the weights of {model_name} are not on this machine: download {where} (nothing is "
        "downloaded during a run), or give weights: PATH"
    )


@hookimpl
def register_models(register):
    register(Timm)
