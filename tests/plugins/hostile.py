"""Plugins that misbehave on purpose, one failure mode each, for tests/test_faults.py."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Augmenter, Dataset, Model, Preprocessor, Regularizer, Resampler, Splits


class InPlaceInvert(Preprocessor):
    """Stateless, and writes its output into its input (which would corrupt the shared, cached pool)."""

    name = "inplace-invert"
    stateless = True

    def transform(self, images):
        images[...] = 255 - images
        return images


class BadResampler(Resampler):
    """Returns 240 images and 5 labels."""

    name = "bad-resampler"

    def fit_resample(self, images, labels, *, random_state):
        return np.repeat(images[:1], 240, axis=0), labels[:5]


class ExtraLogits(Model):
    """Emits three more logits than there are classes."""

    name = "extra-logits"

    def build(self, in_channels, num_classes, image_size):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_channels * image_size**2, num_classes + 3))


class FailingModel(Model):
    """Raises with a message that looks like rich markup."""

    name = "failing-model"

    def build(self, in_channels, num_classes, image_size):
        raise RuntimeError("[/data/x.npz] could not be read [bold]")


class Exits(Regularizer):
    """Calls sys.exit(0) when the model is built."""

    name = "exits"

    def configure_model(self, model):
        sys.exit(0)


class Suicide(Regularizer):
    """Kills its own process with SIGKILL the first time (as the kernel's OOM killer would), leaving a flag file."""

    name = "suicide"

    class Params(Params):
        flag: str

    def configure_model(self, model):
        if not Path(self.params.flag).exists():
            Path(self.params.flag).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return model


class Hangs(Regularizer):
    """Never returns from configure_model, and swallows every ordinary exception on the way."""

    name = "hangs"

    def configure_model(self, model):
        while True:
            try:  # noqa: SIM105 (written as a careless plugin would)
                time.sleep(0.5)
            except Exception:
                pass


class Stuck(Preprocessor):
    """Hangs in fit (outside training). With ``block_signals`` it blocks SIGALRM first, as code stuck in a C
    extension is out of every signal's reach, so only a killed worker ends it."""

    name = "stuck"

    class Params(Params):
        seconds: float = 3600
        block_signals: bool = False

    def fit(self, images, labels):
        if self.params.block_signals:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(self.params.seconds)
        return self

    def transform(self, images):
        return images


class SlowBatches(Regularizer):
    """Sleeps on every training batch."""

    name = "slow-batches"

    class Params(Params):
        seconds: float = 0.2

    def on_batch(self, images, targets, generator):
        time.sleep(self.params.seconds)
        return images, targets


class OrderSpy(Regularizer):
    """Logs the labels of every training batch, in order (the batch order the shuffle stream gives)."""

    name = "order-spy"

    class Params(Params):
        log: str

    def on_batch(self, images, targets, generator):
        with open(self.params.log, "a") as handle:
            handle.write(json.dumps(targets.tolist()) + "\n")
        return images, targets


class RandomDraws(Augmenter):
    """Draws random numbers from its generator and leaves the batch as it is."""

    name = "random-draws"

    def __call__(self, batch, generator):
        torch.rand(len(batch), 5, generator=generator, device=batch.device)
        return batch


class NanLoss(Regularizer):
    """Makes this cell's loss NaN (and only this cell's)."""

    name = "nan-loss"

    def configure_loss(self, options, class_counts):
        function = options["function"]
        return {**options, "function": lambda logits, targets, **kw: function(logits, targets, **kw) * float("nan")}


class LayerNormNet(Model):
    """A model with a layer octbench cannot stack (LayerNorm)."""

    name = "layernorm-net"

    def build(self, in_channels, num_classes, image_size):
        return torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.LayerNorm(in_channels * image_size**2),
            torch.nn.Linear(in_channels * image_size**2, num_classes),
        )


class ChannelMixer(Model):
    """Only stackable layers, but a forward that reshapes across channels (so a stack would mix its members)."""

    name = "channel-mixer"

    def build(self, in_channels, num_classes, image_size):
        class Mixer(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv2d(in_channels, 4, 3, padding=1)
                self.head = torch.nn.Linear(4, num_classes)

            def forward(self, x):
                x = self.conv(x)
                return self.head(x.mean(dim=(1, 2, 3))[:, None].expand(-1, 4))

        return Mixer()


Mode = Literal[
    "labels-beyond-classes",
    "one-class",
    "count-mismatch",
    "missing-test-class",
    "odd-names",
    "fixed-md5",
]


class HostileData(Dataset):
    """Small learnable images with one defect chosen by ``mode``."""

    name = "hostile-data"
    offline = True

    class Params(Params):
        mode: Mode = "fixed-md5"
        invert: bool = Field(False, description="another dataset under the same md5 label")

    def load(self, data_dir, *, progress=False):
        rng = np.random.default_rng(0)
        mode = self.params.mode

        def make(n):
            labels = np.arange(n) % 3
            images = rng.integers(0, 60, (n, 12, 12, 1)).astype(np.uint8)
            images[:, 4:, :, 0] += (labels * 60).astype(np.uint8)[:, None, None]
            if self.params.invert:
                images = 255 - images
            return images, labels.astype(np.int64)

        (tx, ty), (vx, vy), (sx, sy) = make(90), make(30), make(30)
        names = ["a", "b", "c"]
        if mode == "labels-beyond-classes":
            ty = ty + 2
        elif mode == "one-class":
            ty, vy = np.zeros_like(ty), np.zeros_like(vy)
        elif mode == "count-mismatch":
            ty = ty[:-3]
        elif mode == "missing-test-class":
            keep = sy != 2
            sx, sy = sx[keep], sy[keep]
        elif mode == "odd-names":
            names = ["[/bold]evil", "lr $\\notacommand$", "<script>alert(1)</script>"]
        return Splits(tx, ty, vx, vy, sx, sy, class_names=names, source=f"hostile {mode}", md5="fixed")


@hookimpl
def register_datasets(register):
    register(HostileData)


@hookimpl
def register_preprocessors(register):
    for cls in (InPlaceInvert, BadResampler, Stuck):
        register(cls)


@hookimpl
def register_augmenters(register):
    register(RandomDraws)


@hookimpl
def register_models(register):
    for cls in (ExtraLogits, FailingModel, LayerNormNet, ChannelMixer):
        register(cls)


@hookimpl
def register_regularizers(register):
    for cls in (Exits, Hangs, Suicide, SlowBatches, OrderSpy, NanLoss):
        register(cls)
