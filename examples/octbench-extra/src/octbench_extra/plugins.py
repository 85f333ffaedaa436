"""One plugin of several kinds, registered through the hooks in ``octbench.hookspecs``."""

from __future__ import annotations

import html

import numpy as np
import torch
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Augmenter, Metric, Optimizer, Preprocessor, Regularizer, ReportSection


class Gamma(Preprocessor):
    """Gamma correction of pixel intensities (uint8 in, uint8 out)."""

    name = "gamma"
    stateless = True  # each image on its own, nothing fitted: octbench transforms the dataset once and caches it

    class Params(Params):
        gamma: float = Field(0.8, gt=0, le=5, description="exponent applied to intensities scaled to [0, 1]")

    def transform(self, images):
        table = (255 * (np.arange(256) / 255) ** self.params.gamma).round().astype(np.uint8)
        return table[images] if images.dtype == np.uint8 else images**self.params.gamma


class RandomErasing(Augmenter):
    """Erase one random rectangle per image (a quarter of the side at most), filled with the batch's lowest value."""

    name = "random-erasing"

    class Params(Params):
        p: float = Field(0.5, ge=0, le=1, description="probability of erasing an image")
        size: float = Field(0.25, gt=0, le=1, description="largest side of the rectangle, as a share of the image")

    def __call__(self, batch, generator):
        n, _, height, width = batch.shape
        device = batch.device
        low = self.value_range[0]  # the trainer says what the batch's values span
        side = max(1, int(self.params.size * min(height, width)))
        top = torch.randint(0, height - side + 1, (n,), generator=generator, device=device)
        left = torch.randint(0, width - side + 1, (n,), generator=generator, device=device)
        chosen = torch.rand(n, generator=generator, device=device) < self.params.p
        rows = torch.arange(height, device=device).view(1, height, 1)
        cols = torch.arange(width, device=device).view(1, 1, width)
        inside = (rows >= top.view(n, 1, 1)) & (rows < (top + side).view(n, 1, 1))
        inside = inside & (cols >= left.view(n, 1, 1)) & (cols < (left + side).view(n, 1, 1))
        mask = (inside & chosen.view(n, 1, 1)).unsqueeze(1)
        return torch.where(mask, torch.full_like(batch, low), batch)


class ClipGradients(Regularizer):
    """Clip the gradients' total norm after every backward pass, before the optimizer step."""

    name = "clip-gradients"

    class Params(Params):
        max_norm: float = Field(1.0, gt=0, description="largest total gradient norm")

    def before_step(self, model):
        torch.nn.utils.clip_grad_norm_(model.parameters(), self.params.max_norm)


class RMSprop(Optimizer):
    """RMSprop (torch.optim.RMSprop)."""

    name = "rmsprop"

    class Params(Params):
        alpha: float = Field(0.99, gt=0, lt=1, description="smoothing of the squared gradients")
        momentum: float = Field(0.0, ge=0, lt=1, description="momentum")

    def build(self, parameters, *, lr, weight_decay, device):
        p = self.params
        return torch.optim.RMSprop(parameters, lr=lr, alpha=p.alpha, momentum=p.momentum, weight_decay=weight_decay)


class LogLoss(Metric):
    """Cross-entropy of the predicted probabilities against the labels (lower is better)."""

    name = "log-loss"
    higher_is_better = False

    def compute(self, y_true, probs):
        picked = probs[np.arange(len(y_true)), y_true]
        return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


class ClassBalance(ReportSection):
    """A table of each split's class counts, from the run's dataset record."""

    name = "class-balance"
    title = "Class balance"

    def render(self, results, analysis):
        counts = results.dataset.get("class_counts", {})
        if not counts:
            return "<p>The run did not record class counts.</p>"
        header = "".join(f"<th>{html.escape(split)}</th>" for split in counts)
        rows = "".join(
            f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{c[i]}</td>" for c in counts.values()) + "</tr>"
            for i, name in enumerate(results.class_names)
        )
        return f"<table><thead><tr><th>class</th>{header}</tr></thead><tbody>{rows}</tbody></table>"


@hookimpl
def register_preprocessors(register):
    register(Gamma)


@hookimpl
def register_augmenters(register):
    register(RandomErasing)


@hookimpl
def register_regularizers(register):
    register(ClipGradients)


@hookimpl
def register_optimizers(register):
    register(RMSprop)


@hookimpl
def register_metrics(register):
    register(LogLoss)


@hookimpl
def register_report_sections(register):
    register(ClassBalance)
