"""Training a stack of cells as one computation, at a cost per step that does not grow with the stack.

Every step of a stack of G cells (``Learner``s whose models ``octbench.cell.stack_model`` can group) is the same
handful of kernels whatever G is: one gather of all members' batches from one device tensor holding every member's
training images, one scaling, one grouped forward (``GroupedModel``), one batched cross-entropy, one backward and
one optimizer step over the stacked parameters, with each member's learning rate, weight decay and momentum as
tensors and a mask that leaves members not stepping exactly as they are. What stays per member is what belongs to
one member: its own random streams, and a plugin's own hook (an augmenter, a regularizer's ``on_batch``,
``before_step`` or ``after_step``, an optimizer without ``update``, a loss that is not cross-entropy), which then
runs member by member; ``Stack.per_member`` names them.

The tail of an epoch, where members' training parts differ in size, steps the members that still have a batch of
the same size together (a few steps per epoch, costing a kernel or two per member).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from octbench.cell.device import as_float, autocast, clock
from octbench.cell.stack_model import GroupedModel
from octbench.errors import CellFailed

#: the name a profile gives one step of a stack (``torch.profiler.record_function``)
STEP = "octbench.step"


def guard(learner: Any, action: Any, *args: Any) -> Any:
    """``action(*args)``; a failure (even a plugin's sys.exit) fails ``learner`` alone and gives None."""
    try:
        return action(*args)
    except (Exception, SystemExit) as exc:
        learner.fail(exc)
        return None


class Stack:
    """G learners trained as one computation. ``train`` runs them to the end; their models keep their own tensors
    afterwards."""

    def __init__(self, learners: list[Any]) -> None:
        self.learners = learners
        first = learners[0]
        self.device, self.batch, self.size = first.device, first.batch, len(learners)
        self.grouped = GroupedModel([learner.model for learner in learners], [m.dropout_key for m in learners])
        # each member's own parameters, in the order of ``grouped.params`` (for hooks that read their gradients)
        self.own_params = [list(learner.model.parameters()) for learner in learners]
        self._data()
        self.optimizer = StackedOptimizer.of(learners, self.grouped.params)
        self.loss = BatchedCrossEntropy.of(learners)
        self.per_member = _per_member(learners, self.optimizer, self.loss)
        for learner in learners:
            learner.per_member = self.per_member if self.size > 1 else []
        self._rows: dict[tuple[int, ...], torch.Tensor] = {}

    def _data(self) -> None:
        """One device tensor of every member's training images (members training on the same part share it); each
        learner's own becomes a view of it."""
        start: dict[tuple, int] = {}
        images, labels, offsets, total = [], [], [], 0
        for learner in self.learners:
            key = (learner.x_all.data_ptr(), tuple(learner.x_all.shape), learner.y_all.data_ptr())
            if key not in start:
                start[key] = total
                images.append(learner.x_all)
                labels.append(learner.y_all)
                total += learner.n
            offsets.append(start[key])
        self.x = images[0] if len(images) == 1 else torch.cat(images)
        self.y = labels[0] if len(labels) == 1 else torch.cat(labels)
        self.offsets = offsets
        for learner, offset in zip(self.learners, offsets, strict=True):
            learner.x_all, learner.y_all = self.x[offset : offset + learner.n], self.y[offset : offset + learner.n]

    def rows(self, rows: tuple[int, ...]) -> torch.Tensor | None:
        """The members ``rows`` as an index tensor on the device (None for the whole stack), made once."""
        if len(rows) == self.size:
            return None
        if rows not in self._rows:
            self._rows[rows] = torch.tensor(rows, device=self.device)
        return self._rows[rows]

    def train(self, epochs: int | None = None, on_epoch: Any = None) -> None:
        """Each member for its own ``epochs`` (at most ``epochs``): a member whose last epoch has passed stops
        stepping, as one that stopped early does, while the others go on."""
        self.last = [learner.epochs if epochs is None else min(epochs, learner.epochs) for learner in self.learners]
        try:
            for epoch in range(max(self.last)):
                if not self._epoch(epoch, on_epoch):
                    break
            for learner in self.learners:
                if learner.running:
                    guard(learner, learner.finish)
        finally:
            self.grouped.release(self.learners[0].channels_last)

    def images_per_s(self, seconds: float) -> float:
        """Training images per second summed over the members, timed for about ``seconds`` after two warm-up
        steps on the members' first batch (the trial that sizes stacks, ``octbench.cell.machine.stack_size``); the
        members train, so give it copies."""
        rows = tuple(range(self.size))
        for learner in self.learners:
            learner.begin_epoch(0)
        self._begin()
        index = self._order(list(rows), self.batch).reshape(-1)
        try:
            for _ in range(2):
                self._step(rows, index, first=False)
            steps, start = 0, clock(self.device)
            while clock(self.device) - start < seconds:
                self._step(rows, index, first=False)
                steps += 1
            elapsed = clock(self.device) - start
        finally:
            self.grouped.release()
        failed = [learner.error for learner in self.learners if learner.error is not None]
        if failed:
            raise failed[0]
        return steps * self.size * self.batch / elapsed

    def _epoch(self, epoch: int, on_epoch: Any) -> bool:
        """One epoch of every running member with epochs left; False when none was running."""
        active = [r for r, learner in enumerate(self.learners) if learner.running and epoch < self.last[r]]
        for r in active:
            guard(self.learners[r], self.learners[r].begin_epoch, epoch)
        active = [r for r in active if self.learners[r].running]
        if not active:
            return False
        self._begin()
        batch = self.batch
        full = min(self.learners[r].n // batch for r in active)  # steps where every member has a whole batch
        order = self._order(active, full * batch)
        start = clock(self.device)
        for step in range(max(self.learners[r].steps for r in active)):
            for r in active:
                if self.learners[r].running:
                    guard(self.learners[r], self.learners[r].check_time, epoch)
            running = tuple(r for r in active if self.learners[r].running)
            if not running:
                break
            first = epoch == 0 and step == 0
            if step < full:
                if len(running) < len(order):  # a member failed in this epoch: its rows leave the order
                    keep = torch.tensor([active.index(r) for r in running], device=self.device)
                    order, active = order.index_select(0, keep), list(running)
                self._step(running, order[:, step * batch : (step + 1) * batch].reshape(-1), first)
            else:
                self._tail(running, step, first)
        seconds = clock(self.device) - start
        for r in active:
            learner = self.learners[r]
            if learner.running:
                sums = (self.loss_sum[r], self.correct[r])  # the stack's running sums: the learner's are unused here
                guard(learner, learner.end_epoch, epoch, seconds, on_epoch if r == active[0] else None, sums)
        return True

    def _begin(self) -> None:
        """Training mode and zero running sums (each member's loss and correct predictions) for an epoch."""
        self.grouped.train()
        self.loss_sum = torch.zeros(self.size, device=self.device)
        self.correct = torch.zeros(self.size, device=self.device, dtype=torch.long)

    def _order(self, active: list[int], length: int) -> torch.Tensor:
        """(members, length): each member's shuffled order of this epoch, as positions in the stack's data."""
        return torch.stack([self.learners[r].order[:length] + self.offsets[r] for r in active])

    def _tail(self, running: tuple[int, ...], step: int, first: bool) -> None:
        """A step past some members' last whole batch: members with a batch of the same size step together."""
        by_size: dict[int, list[int]] = {}
        for r in running:
            learner = self.learners[r]
            size = min(learner.batch, learner.n - step * learner.batch)
            if step < learner.steps:
                by_size.setdefault(size, []).append(r)
        for size, rows in by_size.items():
            start = step * self.batch
            parts = [self.learners[r].order[start : start + size] + self.offsets[r] for r in rows]
            self._step(tuple(rows), torch.cat(parts), first)

    def _step(self, rows: tuple[int, ...], index: torch.Tensor, first: bool) -> None:
        """One optimizer step of the members ``rows``, member i on the images at ``index[i*B:(i+1)*B]``; a profile
        shows it as ``octbench.step``."""
        with torch.profiler.record_function(STEP):
            self._run_step(rows, index, first)

    def _run_step(self, rows: tuple[int, ...], index: torch.Tensor, first: bool) -> None:
        members = [self.learners[r] for r in rows]
        count = len(rows)
        try:
            x = as_float(self.x.index_select(0, index), False)
            y = self.y.index_select(0, index).view(count, -1)
            x = x.view(count, -1, *x.shape[1:])  # (members, B, C, H, W)
            targets = self._hooks(members, x, y)
            batch = x.shape[1]
            # (B, members*C, H, W), laid out as the concatenation of the members' batches would be, so a member's
            # convolutions run the kernels they run alone
            x = x.transpose(0, 1).reshape(batch, -1, *x.shape[3:])
            row_index = self.rows(rows)
            with autocast(self.device, members[0].use_amp):
                logits = self.grouped(x, row_index)
                if first and logits.shape[1] != count * members[0].num_classes:
                    shape = (batch, logits.shape[1] // count)
                    raise CellFailed(
                        f"the model must map a batch of {batch} images to ({batch}, {members[0].num_classes}) "
                        f"logits, one per class; it returned shape {shape}"
                    )
                logits = logits.view(batch, count, -1).transpose(0, 1)  # (members, B, classes)
                if self.loss is not None and targets is None:
                    losses = self.loss(logits, y, row_index)
                else:
                    own = targets or {}
                    losses = torch.stack([m.loss(logits[i], own.get(i, y[i]), first) for i, m in enumerate(members)])
            self.grouped.zero_grad()
            if self.optimizer is None:
                for member in members:
                    member.optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
        except (Exception, SystemExit) as exc:
            for member in members:
                member.fail(exc)
            return
        self._update(rows, members)
        with torch.no_grad():
            correct = (logits.detach().argmax(2) == y).sum(1)
            if row_index is None:
                self.loss_sum.add_(losses.detach() * batch)
                self.correct.add_(correct)
            else:
                self.loss_sum.index_add_(0, row_index, losses.detach() * batch)
                self.correct.index_add_(0, row_index, correct)

    def _hooks(self, members: list[Any], x: torch.Tensor, y: torch.Tensor) -> dict[int, Any] | None:
        """Each member's own batch plugins on its slice of ``x`` (written back in place): members that share their
        augmenters (``Learner.augment_key``) as one batch, the others one by one. The targets any of them changed
        (a mix of labels), by member, or None when none did."""
        changed: dict[int, Any] = {}
        shared: dict[tuple, list[int]] = {}
        for i, member in enumerate(members):
            if not member.batch_hooks or not member.running:
                continue
            if member.augment_key is not None:
                shared.setdefault(member.augment_key, []).append(i)
                continue
            out = guard(member, member.transform, x[i], y[i])
            if out is None:
                continue
            images, targets = out
            x[i] = images
            if targets is not y[i]:
                changed[i] = targets
        for group in shared.values():
            self._augment_together([members[i] for i in group], x, group)
        return changed or None

    def _augment_together(self, members: list[Any], x: torch.Tensor, group: list[int]) -> None:
        """The shared augmenters of ``members`` (rows ``group`` of ``x``) applied once to their stacked batch,
        each member drawing from its own streams."""
        whole = len(group) == len(x)
        chosen = x if whole else x[group]
        flat = chosen.reshape(-1, *x.shape[2:])
        try:
            for k, augmenter in enumerate(members[0].augmenters):
                flat = augmenter.apply_stacked(flat, [member.augment_streams[k] for member in members])
        except (Exception, SystemExit) as exc:
            for member in members:
                member.fail(exc)
            return
        if whole:
            x.copy_(flat.view(x.shape))
        else:
            x[group] = flat.view(chosen.shape)

    def _update(self, rows: tuple[int, ...], members: list[Any]) -> None:
        """The optimizer step of ``members``: one over the stacked parameters when they share an optimizer that
        can (``Optimizer.update``), else member by member; each member's own hooks around it."""
        if self.optimizer is None or any(m.gradient_hooks for m in members):
            self._member_gradients(rows)
        for member in members:
            if member.gradient_hooks and member.running:
                guard(member, member.before_step)
        stepping = tuple(r for r in rows if self.learners[r].running)
        if self.optimizer is not None:
            self.optimizer.step(stepping)
        else:
            for r in stepping:
                guard(self.learners[r], self.learners[r].optimizer.step)
        for r in stepping:
            learner = self.learners[r]
            if learner.running and (learner.batch_schedulers or learner.step_hooks):
                guard(learner, learner.after_step)

    def _member_gradients(self, rows: tuple[int, ...]) -> None:
        """Each member's parameters' ``grad`` as a view of the stack's, for hooks and optimizers of its own."""
        for position, stacked in enumerate(self.grouped.params):
            for r in rows:
                own = self.own_params[r][position]
                own.grad = None if stacked.grad is None else stacked.grad[r]


class StackedOptimizer:
    """One optimizer step over every member's stacked parameters (``Optimizer.update``), with the settings each
    member's own torch optimizer holds (its schedulers change them there) read as tensors."""

    def __init__(self, technique: Any, learners: list[Any], params: list[torch.Tensor]) -> None:
        self.technique, self.learners = technique, learners
        self.params = [p for p in params if p.requires_grad]
        self.groups = [learner.optimizer.param_groups[0] for learner in learners]
        self.keys = numeric_keys(self.groups)
        self.state: dict[str, Any] = {}
        self.device = learners[0].device
        self._settings: list | None = None
        self._hyper: dict[str, torch.Tensor] = {}
        self._masks: dict[tuple[int, ...], torch.Tensor] = {}
        for learner in learners:  # its schedulers step the settings of an optimizer this class steps for it
            learner.optimizer._opt_called = True

    @classmethod
    def of(cls, learners: list[Any], params: list[torch.Tensor]) -> StackedOptimizer | None:
        """The stack's optimizer, or None when its members must step their own (a plugin without ``update``,
        different plugins or settings beyond the numbers, more than one parameter group)."""
        technique = learners[0].optimizer_technique
        same = all(
            type(m.optimizer_technique) is type(technique) and m.optimizer_technique.params == technique.params
            for m in learners
        )
        one_group = all(len(m.optimizer.param_groups) == 1 for m in learners)
        return cls(technique, learners, params) if technique.stacks() and same and one_group else None

    def step(self, rows: tuple[int, ...]) -> None:
        if not rows:
            return
        settings = [[group[k] for k in self.keys] for group in self.groups]
        if settings != self._settings:  # a scheduler changed a member's learning rate (or momentum): new tensors
            self._settings = settings
            self._hyper = settings_tensors(self.groups, self.keys, self.device)
        if rows not in self._masks:
            mask = torch.zeros(len(self.learners), device=self.device)
            mask[list(rows)] = 1
            self._masks[rows] = mask
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        with torch.no_grad():
            self.technique.update(self.params, grads, self.state, {**self._hyper, "mask": self._masks[rows]})


class BatchedCrossEntropy:
    """Every member's cross-entropy in one call, with its own class weights and label smoothing, as
    ``F.cross_entropy`` computes each (mean over the batch, weighted by the target's class weight)."""

    def __init__(self, learners: list[Any]) -> None:
        device = learners[0].device
        classes = learners[0].num_classes
        weights = [m.loss_options.get("weight") for m in learners]
        self.weight = None
        if any(w is not None for w in weights):
            ones = torch.ones(classes, device=device)
            self.weight = torch.stack([w if w is not None else ones for w in weights])
        smoothing = [float(m.loss_options.get("label_smoothing", 0.0)) for m in learners]
        self.smoothing = torch.tensor(smoothing, device=device) if any(smoothing) else None

    @classmethod
    def of(cls, learners: list[Any]) -> BatchedCrossEntropy | None:
        plain = all(m.plain_loss and set(m.loss_options) <= {"weight", "label_smoothing"} for m in learners)
        return cls(learners) if plain else None

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """(members,) losses for logits (members, B, classes) and labels (members, B)."""
        log_p = F.log_softmax(logits.float(), dim=2)
        nll = -log_p.gather(2, y.unsqueeze(2)).squeeze(2)  # (members, B)
        if self.weight is None:
            loss = nll.mean(1)
            smooth = -log_p.mean(2).mean(1) if self.smoothing is not None else None
        else:
            weight = self.weight if rows is None else self.weight.index_select(0, rows)
            picked = weight.gather(1, y)
            total = picked.sum(1)
            loss = (picked * nll).sum(1) / total
            smooth = -(log_p * weight.unsqueeze(1)).sum(2).sum(1) / (total * log_p.shape[2])
        if self.smoothing is None:
            return loss
        eps = self.smoothing if rows is None else self.smoothing.index_select(0, rows)
        return (1 - eps) * loss + eps * smooth


def numeric_keys(groups: list[dict[str, Any]]) -> list[str]:
    """The settings every one of these optimizer param groups holds as a number or a tuple of numbers."""
    return sorted(set.intersection(*({k for k, v in group.items() if _number(v)} for group in groups)))


def settings_tensors(groups: list[dict[str, Any]], keys: list[str], device: Any) -> dict[str, torch.Tensor]:
    """``Optimizer.update``'s ``hyper`` (less the mask): setting ``k`` of every member, (members,) or
    (members, 2) for a pair, in float64: the settings exactly as written (0.999 in float32 is 0.99900001, so
    1 - beta2 came out 1.3e-5 off), as torch's optimizers use them (Python floats) before a step casts the result."""
    return {k: torch.tensor([group[k] for group in groups], dtype=torch.float64, device=device) for k in keys}


def _number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, tuple):
        return bool(value) and all(_number(v) for v in value)
    return isinstance(value, int | float)


def _per_member(learners: list[Any], optimizer: Any, loss: Any) -> list[str]:
    """The plugins whose code runs member by member in this stack (what keeps a step's cost growing with it)."""
    notes = set()
    for learner in learners:
        own = learner.batch_hooks if learner.augment_key is None else []
        notes.update(f"{type(p).kind} '{p.name}' sees each member's batch" for p in own)
        hooks = [*learner.gradient_hooks, *learner.step_hooks]
        notes.update(f"regularizer '{r.name}' hooks the optimizer step" for r in hooks)
    if optimizer is None and len(learners) > 1:
        names = sorted({m.optimizer_technique.name for m in learners})
        notes.add(f"optimizer {', '.join(repr(n) for n in names)} has no stacked update, or the members' differ")
    if loss is None:
        notes.add("the loss is not plain cross-entropy")
    return sorted(notes)
