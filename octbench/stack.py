"""Several cells' models trained as one computation: the members' channels side by side in one tensor.

A batch of G members is one tensor (B, G*C, H, W): member g's images sit in channel block g. Each layer of the
model is replaced by its grouped form: a convolution with ``groups`` times G, a batch norm over G*C channels (so
each member keeps its own statistics), a linear layer as one batched matrix product, a dropout drawing each
member's mask from that member's own generator. Element-wise layers and pooling need no change. The members keep
their own ``nn.Module`` (its parameters are what the grouped layers concatenate at each step, and its buffers are
written back after it), their own optimizer, schedulers and regularizers: stacking changes how many kernels run,
not what each cell computes.

A model is stacked only when every leaf module has a grouped form and the grouped forward reproduces each member's
own forward on a probe batch; otherwise it trains alone (``unstackable`` says why).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Identity,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
)


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One member's tensor as it is (no copy), several concatenated."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


class _Grouped(nn.Module):
    """A leaf of the grouped model: reads the current members' own layer at ``path`` when it runs."""

    def __init__(self, path: str, stack: GroupedModel) -> None:
        super().__init__()
        self.path = path
        object.__setattr__(self, "stack", stack)  # not a submodule: the stack owns this leaf, not the reverse

    def layers(self) -> list[nn.Module]:
        return [member.get_submodule(self.path) for member in self.stack.active]


class GroupedConv2d(_Grouped):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = self.layers()
        first = layers[0]
        weight = _cat([layer.weight for layer in layers])
        bias = _cat([layer.bias for layer in layers]) if first.bias is not None else None
        return F.conv2d(x, weight, bias, first.stride, first.padding, first.dilation, first.groups * len(layers))


class GroupedLinear(_Grouped):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = self.layers()
        groups = len(layers)
        if groups == 1:
            return F.linear(x, layers[0].weight, layers[0].bias)
        x = x.reshape(x.shape[0], groups, -1).transpose(0, 1)  # (G, B, in)
        weight = torch.stack([layer.weight for layer in layers]).transpose(1, 2)  # (G, in, out)
        if layers[0].bias is not None:
            out = torch.baddbmm(torch.stack([layer.bias for layer in layers]).unsqueeze(1), x, weight)
        else:
            out = torch.bmm(x, weight)
        return out.transpose(0, 1).reshape(out.shape[1], -1)


class GroupedBatchNorm(_Grouped):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = self.layers()
        first = layers[0]
        tracking = first.track_running_stats and first.running_mean is not None
        use_batch = self.training or not tracking
        mean = _cat([layer.running_mean for layer in layers]) if tracking else None
        var = _cat([layer.running_var for layer in layers]) if tracking else None
        momentum = first.momentum
        if self.training and tracking:
            for layer in layers:
                layer.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative average, as nn.BatchNorm does
                momentum = 1.0 / float(first.num_batches_tracked)
        weight = _cat([layer.weight for layer in layers]) if first.affine else None
        bias = _cat([layer.bias for layer in layers]) if first.affine else None
        out = F.batch_norm(x, mean, var, weight, bias, use_batch, momentum or 0.0, first.eps)
        if self.training and tracking and len(layers) > 1:  # concatenated statistics were updated: give them back
            with torch.no_grad():
                torch._foreach_copy_([layer.running_mean for layer in layers], list(mean.split(first.num_features)))
                torch._foreach_copy_([layer.running_var for layer in layers], list(var.split(first.num_features)))
        return out


class GroupedDropout(_Grouped):
    """Each member's mask comes from that member's own dropout generator, so it is the same mask whether the member
    trains alone or in a stack."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.layers()[0].p
        if not self.training or p == 0:
            return x
        groups = len(self.stack.active)
        members = x.reshape(x.shape[0], groups, -1)
        masks = [
            torch.empty(members.shape[0], members.shape[2], device=x.device, dtype=x.dtype).bernoulli_(
                1 - p, generator=generator
            )
            for generator in self.stack.dropout_generators
        ]
        mask = torch.stack(masks, dim=1).div_(1 - p)
        return (members * mask).reshape(x.shape)


GROUPED = {
    nn.Conv2d: GroupedConv2d,
    nn.Linear: GroupedLinear,
    nn.BatchNorm1d: GroupedBatchNorm,
    nn.BatchNorm2d: GroupedBatchNorm,
    nn.Dropout: GroupedDropout,
}


def unstackable(model: nn.Module) -> str | None:
    """Why ``model`` cannot be grouped (a leaf module without a grouped form), or None."""
    for path, module in model.named_modules():
        if list(module.children()):
            continue
        if isinstance(module, nn.Conv2d) and (module.padding_mode != "zeros" or isinstance(module.padding, str)):
            return f"its {type(module).__name__} at '{path}' pads in a way octbench does not stack"
        if type(module) not in GROUPED and not isinstance(module, ELEMENTWISE):
            return f"it has a {type(module).__name__} ('{path}'), which octbench cannot stack"
    return None


def signature(model: nn.Module) -> tuple:
    """What two members must share to be grouped: leaf types, parameter and buffer shapes, layer settings."""
    leaves = [(path, type(m).__name__, repr(m)) for path, m in model.named_modules() if not list(m.children())]
    shapes = [(name, tuple(t.shape)) for name, t in [*model.named_parameters(), *model.named_buffers()]]
    return (tuple(leaves), tuple(shapes))


class GroupedModel(nn.Module):
    """The members' architecture once, with grouped leaves; ``forward`` runs the members in ``active``."""

    def __init__(self, template: nn.Module) -> None:
        super().__init__()
        self.body = copy.deepcopy(template)
        for path, module in list(self.body.named_modules()):
            kind = GROUPED.get(type(module))
            if kind is not None:
                _replace(self.body, path, kind(path, self))
        for parameter in self.body.parameters():  # the members' own parameters are the ones trained
            parameter.requires_grad_(False)
        self.active: list[nn.Module] = []
        self.dropout_generators: list[torch.Generator] = []

    def run(
        self,
        members: Sequence[nn.Module],
        images: Sequence[torch.Tensor],
        generators: Sequence[torch.Generator] = (),
    ) -> list[torch.Tensor]:
        """Each member's logits for its own batch of images (every batch the same shape)."""
        self.active, self.dropout_generators = list(members), list(generators)
        self.train(members[0].training)
        try:
            logits = self.body(torch.cat(list(images), dim=1))
        finally:
            self.active, self.dropout_generators = [], []
        return list(logits.reshape(logits.shape[0], len(members), -1).unbind(1))


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)


def probe(grouped: GroupedModel, members: Sequence[nn.Module], shape: tuple[int, ...], device) -> str | None:
    """Whether the grouped forward gives each member exactly its own forward (evaluation mode, float32): a model
    whose forward code mixes channels (a reshape across them, a concatenation) would not, and must train alone."""
    was = [m.training for m in members]
    try:
        for m in members:
            m.eval()
        generator = torch.Generator(device=device).manual_seed(0)
        batches = [torch.rand((4, *shape), generator=generator, device=device) for _ in members]
        with torch.no_grad():
            grouped_out = grouped.run(members, batches)
            own = [m(x) for m, x in zip(members, batches, strict=True)]
        for mine, theirs in zip(grouped_out, own, strict=True):
            if mine.shape != theirs.shape or not torch.allclose(mine, theirs, rtol=1e-4, atol=1e-5):
                return "its forward mixes the stacked members' channels, so the grouped model would not match it"
    except (RuntimeError, ValueError) as exc:
        return f"its grouped forward failed ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    finally:
        for m, training in zip(members, was, strict=True):
            m.train(training)
    return None
