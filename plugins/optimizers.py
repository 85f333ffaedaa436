"""Optimizers: Adam, AdamW (decoupled weight decay) and SGD with momentum, as torch implements them (fused on CUDA)."""

from __future__ import annotations

import torch
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Optimizer


def _fused(device) -> dict:
    return {"fused": True} if torch.device(device).type == "cuda" else {}


def _per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(G,) values, computed in float64 from the settings, as the stacked tensor's (G, ...) dtype and shaped to
    multiply it: as torch's optimizers compute a step's numbers from Python floats and cast the result."""
    return values.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def _adam_update(params, grads, state, hyper, decoupled: bool) -> None:
    """Adam or AdamW over stacked members, as torch.optim.Adam(W) computes it, with per-member settings; a member
    whose mask is 0 keeps its parameters, moments and step count."""
    mask, lr, decay = hyper["mask"].double(), hyper["lr"], hyper["weight_decay"]
    beta1, beta2, eps = hyper["betas"][:, 0], hyper["betas"][:, 1], hyper["eps"]
    if not state:
        state["step"] = torch.zeros_like(mask, dtype=torch.float64)
        state["exp_avg"] = [torch.zeros_like(p) for p in params]
        state["exp_avg_sq"] = [torch.zeros_like(p) for p in params]
    step = state["step"].add_(mask)
    done = step.clamp(min=1)  # a member that never stepped divides by nothing: its step size is 0 anyway
    correction2 = (1 - beta2**done).sqrt()
    step_size = lr * mask / (1 - beta1**done)
    for param, grad, exp_avg, exp_avg_sq in zip(params, grads, state["exp_avg"], state["exp_avg_sq"], strict=True):
        if decoupled:
            param.mul_(_per_member(1 - lr * decay * mask, param))
        else:
            grad = grad.add(param * _per_member(decay, param))
        exp_avg.lerp_(grad, _per_member((1 - beta1) * mask, param))
        exp_avg_sq.lerp_(grad * grad, _per_member((1 - beta2) * mask, param))
        denom = (exp_avg_sq.sqrt() / _per_member(correction2, param)).add_(_per_member(eps, param))
        param.sub_(exp_avg / denom * _per_member(step_size, param))


class Adam(Optimizer):
    """Adam (torch.optim.Adam); weight decay is L2 added to the gradient."""

    name = "adam"

    class Params(Params):
        beta1: float = Field(0.9, ge=0, lt=1, description="decay of the first moment")
        beta2: float = Field(0.999, ge=0, lt=1, description="decay of the second moment")

    def build(self, parameters, *, lr, weight_decay, device):
        betas = (self.params.beta1, self.params.beta2)
        return torch.optim.Adam(parameters, lr=lr, betas=betas, weight_decay=weight_decay, **_fused(device))

    def update(self, params, grads, state, hyper):
        _adam_update(params, grads, state, hyper, decoupled=False)


class AdamW(Adam):
    """AdamW (torch.optim.AdamW): Adam with decoupled weight decay."""

    name = "adamw"

    def build(self, parameters, *, lr, weight_decay, device):
        betas = (self.params.beta1, self.params.beta2)
        return torch.optim.AdamW(parameters, lr=lr, betas=betas, weight_decay=weight_decay, **_fused(device))

    def update(self, params, grads, state, hyper):
        _adam_update(params, grads, state, hyper, decoupled=True)


class SGD(Optimizer):
    """SGD with momentum, optionally Nesterov's (torch.optim.SGD)."""

    name = "sgd"

    class Params(Params):
        momentum: float = Field(0.9, ge=0, lt=1, description="momentum")
        nesterov: bool = Field(False, description="Nesterov momentum")

    def build(self, parameters, *, lr, weight_decay, device):
        p = self.params
        return torch.optim.SGD(parameters, lr=lr, weight_decay=weight_decay, momentum=p.momentum, nesterov=p.nesterov)

    def update(self, params, grads, state, hyper):
        """SGD as torch.optim.SGD computes it (the first step's buffer is the gradient: a zero buffer times the
        momentum plus it), per member; a member whose mask is 0 keeps its parameters and buffer."""
        mask, lr, decay, momentum = hyper["mask"].double(), hyper["lr"], hyper["weight_decay"], hyper["momentum"]
        if not state:
            state["buffer"] = [torch.zeros_like(p) for p in params]
        keep = torch.where(mask > 0, momentum, torch.ones_like(momentum))
        for param, grad, buffer in zip(params, grads, state["buffer"], strict=True):
            grad = grad.add(param * _per_member(decay, param))
            # with momentum 0 the buffer is the gradient: plain SGD, as torch computes it without a buffer
            buffer.mul_(_per_member(keep, param)).add_(grad * _per_member(mask, param))
            grad = grad.add(buffer * _per_member(momentum, param)) if self.params.nesterov else buffer
            param.sub_(grad * _per_member(lr * mask, param))


@hookimpl
def register_optimizers(register):
    for cls in (Adam, AdamW, SGD):
        register(cls)
