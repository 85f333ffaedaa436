"""Optimizers: Adam, AdamW (decoupled weight decay) and SGD with momentum, as torch implements them (fused on CUDA)."""

from __future__ import annotations

import torch
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Optimizer


def _fused(device) -> dict:
    return {"fused": True} if torch.device(device).type == "cuda" else {}


class Adam(Optimizer):
    """Adam (torch.optim.Adam); weight decay is L2 added to the gradient."""

    name = "adam"

    class Params(Params):
        beta1: float = Field(0.9, ge=0, lt=1, description="decay of the first moment")
        beta2: float = Field(0.999, ge=0, lt=1, description="decay of the second moment")

    def build(self, parameters, *, lr, weight_decay, device):
        betas = (self.params.beta1, self.params.beta2)
        return torch.optim.Adam(parameters, lr=lr, betas=betas, weight_decay=weight_decay, **_fused(device))


class AdamW(Adam):
    """AdamW (torch.optim.AdamW): Adam with decoupled weight decay."""

    name = "adamw"

    def build(self, parameters, *, lr, weight_decay, device):
        betas = (self.params.beta1, self.params.beta2)
        return torch.optim.AdamW(parameters, lr=lr, betas=betas, weight_decay=weight_decay, **_fused(device))


class SGD(Optimizer):
    """SGD with momentum, optionally Nesterov's (torch.optim.SGD)."""

    name = "sgd"

    class Params(Params):
        momentum: float = Field(0.9, ge=0, lt=1, description="momentum")
        nesterov: bool = Field(False, description="Nesterov momentum")

    def build(self, parameters, *, lr, weight_decay, device):
        p = self.params
        return torch.optim.SGD(parameters, lr=lr, weight_decay=weight_decay, momentum=p.momentum, nesterov=p.nesterov)


@hookimpl
def register_optimizers(register):
    for cls in (Adam, AdamW, SGD):
        register(cls)
