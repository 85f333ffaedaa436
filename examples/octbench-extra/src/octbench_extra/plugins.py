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
    """Each split's class counts, from the run's dataset record: a table (exported as ``class-balance`` in the JSON,
    ``class-balance.csv``, Markdown and LaTeX), a bar chart (drawn through the report's figure writer, so
    ``--figures`` writes it) and, where the test split's class mix differs from the training split's, a sentence
    for the summary."""

    name = "class-balance"
    title = "Class balance"

    def rows(self, results, analysis):
        counts = results.dataset.get("class_counts", {})
        return [
            {"class": name, **{split: int(c[i]) for split, c in counts.items()}}
            for i, name in enumerate(results.class_names)
        ]

    def render(self, results, analysis):
        rows = self.rows(results, analysis)
        if not rows or len(rows[0]) == 1:
            return "<p>The run did not record class counts.</p>"
        splits = [k for k in rows[0] if k != "class"]
        header = "".join(f"<th>{html.escape(split)}</th>" for split in splits)
        body = "".join(
            f"<tr><td>{html.escape(r['class'])}</td>" + "".join(f"<td>{r[s]}</td>" for s in splits) + "</tr>"
            for r in rows
        )
        return f"<table><thead><tr><th>class</th>{header}</tr></thead><tbody>{body}</tbody></table>"

    def figures(self, results, analysis):
        import matplotlib.figure

        rows = self.rows(results, analysis)
        splits = [k for k in rows[0] if k != "class"] if rows else []
        if not splits:
            return {}
        figure = matplotlib.figure.Figure(figsize=(5, 3))
        axes = figure.subplots()
        width = 0.8 / len(splits)
        for j, split in enumerate(splits):
            total = sum(r[split] for r in rows) or 1
            axes.bar([i + j * width for i in range(len(rows))], [r[split] / total for r in rows], width, label=split)
        axes.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))], [r["class"] for r in rows])
        axes.set_ylabel("share of the split")
        axes.legend()
        return {"class shares per split": figure}

    def sentence(self, results, analysis):
        counts = results.dataset.get("class_counts", {})
        if "train" not in counts or "test" not in counts:
            return ""
        train, test = (np.asarray(counts[s], float) for s in ("train", "test"))
        shift = 0.5 * np.abs(train / train.sum() - test / test.sum()).sum()
        if shift < 0.05:
            return ""
        return f"The test split's class mix differs from the training split's by {100 * shift:.0f} points."


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
