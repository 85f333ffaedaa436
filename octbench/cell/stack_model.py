"""Several cells' models trained as one computation: the members' channels side by side in one tensor.

A batch of G members is one tensor (B, G*C, H, W): member g's images sit in channel block g. Each layer of the
model is replaced by its grouped form: a convolution with ``groups`` times G, a batch norm over G*C channels (so
each member keeps its own statistics), a linear layer as one batched matrix product, a dropout drawing each
member's mask from that member's own random stream. Element-wise layers and pooling need no change.

Every parameter and buffer is held once for the whole stack, as one tensor with the members along its first
dimension (``GroupedModel.params``, ``GroupedModel.buffers``), and each member's own ``nn.Module`` holds views of
it: what a member's hook writes into its model (a best-weights restore, an average) is what the stack trains, and
one optimizer can step every member at once. The number of kernels a step dispatches does not depend on how many
members the stack holds. ``release`` gives each member its own tensors back when training ends.

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


class _Grouped(nn.Module):
    """A leaf of the grouped model: the template's layer (its settings) and the stack's tensors at ``path``."""

    def __init__(self, path: str, layer: nn.Module, stack: GroupedModel) -> None:
        super().__init__()
        self.path = path
        object.__setattr__(self, "layer", layer)  # settings only; its tensors are the stack's
        object.__setattr__(self, "stack", stack)  # not a submodule: the stack owns this leaf, not the reverse

    def param(self, name: str) -> torch.Tensor | None:
        return self.stack.tensor(f"{self.path}.{name}")


class GroupedConv2d(_Grouped):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        weight = self.param("weight").flatten(0, 1)
        if weight.shape[1] == 1 and weight.stride() != layer.weight.stride():
            # one input channel: both layouts address the same memory, but the kernel chosen follows the strides
            # the member's own weight has (channels-last or not), and so does its rounding
            weight = weight.as_strided(weight.shape, (layer.weight.stride(0), *layer.weight.stride()[1:]))
        bias = self.param("bias") if layer.bias is not None else None
        groups = layer.groups * self.stack.size
        return F.conv2d(
            x, weight, bias.flatten() if bias is not None else None, layer.stride, layer.padding, layer.dilation, groups
        )


class GroupedLinear(_Grouped):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.stack.size
        x = x.reshape(x.shape[0], groups, -1).transpose(0, 1)  # (G, B, in)
        weight = self.param("weight").transpose(1, 2)  # (G, in, out)
        if self.layer.bias is not None:
            out = torch.baddbmm(self.param("bias").unsqueeze(1), x, weight)
        else:
            out = torch.bmm(x, weight)
        return out.transpose(0, 1).reshape(out.shape[1], -1)


class GroupedBatchNorm(_Grouped):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer, stack = self.layer, self.stack
        tracking = layer.track_running_stats and layer.running_mean is not None
        use_batch = self.training or not tracking
        mean = self.param("running_mean").flatten() if tracking else None
        var = self.param("running_var").flatten() if tracking else None
        momentum = layer.momentum
        counts = stack.count(f"{self.path}.num_batches_tracked") if self.training and tracking else None
        weight = self.param("weight").flatten() if layer.affine else None
        bias = self.param("bias").flatten() if layer.affine else None
        cumulative = counts is not None and momentum is None
        out = F.batch_norm(x, None if cumulative else mean, None if cumulative else var, weight, bias, use_batch,
                           momentum or 0.0, layer.eps)  # fmt: skip
        if cumulative:  # each member's own count: members that stepped a different number of times differ
            _cumulative_update(x, mean, var, counts)
        if self.training and tracking and stack.index is not None:  # a subset's statistics were a copy
            stack.put(f"{self.path}.running_mean", mean)
            stack.put(f"{self.path}.running_var", var)
        return out


def _cumulative_update(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, counts: torch.Tensor) -> None:
    """Running statistics as ``nn.BatchNorm(momentum=None)`` keeps them, a cumulative average over the batches seen,
    for each member with its own count (``F.batch_norm`` takes one momentum for every channel)."""
    with torch.no_grad():
        values = x.detach().float().transpose(0, 1).reshape(x.shape[1], -1)  # (members * C, everything else)
        factor = (1.0 / counts.to(mean.dtype)).repeat_interleave(x.shape[1] // len(counts))
        mean.lerp_(values.mean(1).to(mean.dtype), factor)
        var.lerp_(values.var(1, unbiased=True).to(var.dtype), factor)


class GroupedDropout(_Grouped):
    """Each member's mask comes from that member's own random stream (``GroupedModel.uniform``), so it is the
    same mask whether the member trains alone or in a stack."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.layer.p
        if not self.training or p == 0:
            return x
        members = x.reshape(x.shape[0], self.stack.size, -1)  # (B, G, F)
        keep = self.stack.uniform(members.shape[0] * members.shape[2]) < 1 - p  # (G, B*F)
        mask = keep.reshape(members.shape[1], members.shape[0], -1).transpose(0, 1).to(x.dtype).div_(1 - p)
        return (members * mask).reshape(x.shape)


GROUPED = {
    nn.Conv2d: GroupedConv2d,
    nn.Linear: GroupedLinear,
    nn.BatchNorm1d: GroupedBatchNorm,
    nn.BatchNorm2d: GroupedBatchNorm,
    nn.Dropout: GroupedDropout,
}


def unstackable(model: nn.Module) -> str | None:
    """Why ``model`` cannot be grouped (a leaf module without a grouped form, frozen parameters), or None."""
    frozen = next((name for name, p in model.named_parameters() if not p.requires_grad), None)
    if frozen is not None:
        return f"some of its parameters are frozen ('{frozen}'), which octbench does not stack"
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


# splitmix64 (Steele, Lea and Flood 2014) in int64 arithmetic: constants as two's complement, shifts made logical
_GOLDEN, _MIX1, _MIX2 = -0x61C8864680B583EB, -0x40A7B892E31B1A47, -0x6B2FB644ECCEEE15


def _shift(z: torch.Tensor, bits: int) -> torch.Tensor:
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def splitmix(z: torch.Tensor) -> torch.Tensor:
    z = (z ^ _shift(z, 30)) * _MIX1
    z = (z ^ _shift(z, 27)) * _MIX2
    return z ^ _shift(z, 31)


class GroupedModel(nn.Module):
    """The members' architecture once, with grouped leaves, over one stacked tensor per parameter and buffer.

    ``members`` become views of the stack (``release`` undoes it); ``keys`` (one int per member, from its own
    dropout stream) key each member's dropout masks. ``forward`` runs the members in ``index`` (None: all), each on
    its own channel block of the batch.
    """

    def __init__(self, members: Sequence[nn.Module], keys: Sequence[int] | None = None) -> None:
        super().__init__()
        template = members[0]
        self.body = copy.deepcopy(template)
        for path, module in list(self.body.named_modules()):
            kind = GROUPED.get(type(module))
            if kind is not None:
                _replace(self.body, path, kind(path, module, self))
        for parameter in self.body.parameters():  # the stacked tensors are the ones trained
            parameter.requires_grad_(False)
        self.members = list(members)
        self.stacked: dict[str, torch.Tensor] = {}
        self.params: list[torch.Tensor] = []
        for name, parameter in template.named_parameters():
            self.stacked[name] = _stack(members, name, parameter.requires_grad)
            self.params.append(self.stacked[name])
        for name, _ in template.named_buffers():
            self.stacked[name] = _stack(members, name, False)
        device = self.params[0].device if self.params else torch.device("cpu")
        self.keys = torch.tensor(list(keys) if keys is not None else range(len(members)), device=device)
        self.draws = torch.zeros(len(members), dtype=torch.int64, device=device)
        self.index: torch.Tensor | None = None
        self.size = len(members)

    def tensor(self, name: str) -> torch.Tensor:
        """The stacked tensor ``name`` of the running members (a differentiable selection when not all run)."""
        whole = self.stacked[name]
        if self.index is None:
            return whole
        return whole.index_select(0, self.index)

    def put(self, name: str, values: torch.Tensor) -> None:
        """Write a running subset's updated copy of buffer ``name`` back into the stack."""
        whole = self.stacked[name]
        with torch.no_grad():
            whole.index_copy_(0, self.index, values.reshape(-1, *whole.shape[1:]))

    def count(self, name: str) -> torch.Tensor:
        """Add one to the running members' counter ``name``; the counts of the running members."""
        whole = self.stacked[name]
        if self.index is None:
            return whole.add_(1)
        whole.index_add_(0, self.index, torch.ones_like(self.index, dtype=whole.dtype))
        return whole.index_select(0, self.index)

    def uniform(self, n: int) -> torch.Tensor:
        """(running members, n) uniform numbers in [0, 1), each row from its member's own stream: a counter-based
        generator (splitmix64 of key, draw number and position), so one call serves every member and a member
        draws the same numbers alone or in a stack."""
        keys, draws = (self.keys, self.draws) if self.index is None else (self.keys[self.index], self.draws[self.index])
        position = torch.arange(1, n + 1, device=keys.device)
        z = splitmix(keys.unsqueeze(1) + (draws.unsqueeze(1) * (1 << 32) + position) * _GOLDEN)
        if self.index is None:
            self.draws.add_(1)
        else:
            self.draws.index_add_(0, self.index, torch.ones_like(self.index))
        return _shift(z, 40).to(torch.float32).mul_(2.0**-24)

    def forward(self, images: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, running members * classes) for a batch (B, running members * C, H, W)."""
        self.index = None if index is None or len(index) == self.size else index
        self.size = len(index) if index is not None else len(self.members)
        try:
            return self.body(images)
        finally:
            self.index, self.size = None, len(self.members)

    def run(self, images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each member's logits for its own batch of images (every batch the same shape)."""
        self.train(self.members[0].training)
        logits = self(torch.cat(list(images), dim=1))
        return list(logits.reshape(logits.shape[0], len(self.members), -1).unbind(1))

    def zero_grad(self, set_to_none: bool = True) -> None:
        for parameter in self.params:
            parameter.grad = None

    def release(self, channels_last: bool = False) -> None:
        """Give every member its own tensors back (a copy of its slice), so it no longer holds the stack."""
        layout = torch.channels_last if channels_last else torch.contiguous_format
        for member in self.members:
            for tensor in [*member.parameters(), *member.buffers()]:
                tensor.data = tensor.data.clone(memory_format=layout if tensor.dim() == 4 else torch.contiguous_format)


def _stack(members: Sequence[nn.Module], name: str, grad: bool) -> torch.Tensor:
    """One tensor holding every member's ``name`` along a new first dimension; the members' own become views."""
    own = [_get(member, name) for member in members]
    first = own[0]
    # a channels-last convolution weight stays channels-last, alone and flattened into the grouped weight, so the
    # stacked convolution runs the kernel the member would run alone
    last = first.dim() == 4 and first.is_contiguous(memory_format=torch.channels_last) and first.stride(1) == 1
    layout = torch.channels_last if last else torch.contiguous_format
    whole = torch.empty(
        (len(own) * first.shape[0], *first.shape[1:]) if first.dim() else (len(own),),
        dtype=first.dtype,
        device=first.device,
        memory_format=layout,
    )
    whole = whole.view(len(own), *first.shape)
    with torch.no_grad():
        whole.copy_(torch.stack([t.detach() for t in own]))
    for g, tensor in enumerate(own):
        tensor.data = whole[g]
    return whole.requires_grad_(grad)


def _get(module: nn.Module, name: str) -> torch.Tensor:
    path, _, leaf = name.rpartition(".")
    owner = module.get_submodule(path) if path else module
    return getattr(owner, leaf)


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)


def probe(members: Sequence[nn.Module], shape: tuple[int, ...], device) -> str | None:
    """Whether the grouped forward gives each member exactly its own forward (evaluation mode, float32), tried on
    copies of ``members``: a model whose forward code mixes channels (a reshape across them, a concatenation) would
    not, and must train alone."""
    copies = [copy.deepcopy(m).eval() for m in members]
    try:
        grouped = GroupedModel(copies)
        generator = torch.Generator(device=device).manual_seed(0)
        batches = [torch.rand((4, *shape), generator=generator, device=device) for _ in copies]
        with torch.no_grad():
            grouped_out = grouped.run(batches)
            own = [m(x) for m, x in zip(copies, batches, strict=True)]
        for mine, theirs in zip(grouped_out, own, strict=True):
            if mine.shape != theirs.shape or not torch.allclose(mine, theirs, rtol=1e-4, atol=1e-5):
                return "its forward mixes the stacked members' channels, so the grouped model would not match it"
    except (RuntimeError, ValueError) as exc:
        return f"its grouped forward failed ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    return None
