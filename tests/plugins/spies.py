"""Test plugins: a dataset whose images carry their own identity, and spies that log what they are shown.

Every image's first row encodes where it came from: pixel 0 is 0 for the cross-validation pool and 255 for the
official test split, pixels 1-2 hold its index (base 256), pixel 3 is 77 for a synthetic (resampled) image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from octbench import hookimpl
from octbench.params import Params
from octbench.technique import Augmenter, Dataset, Model, Preprocessor, Regularizer, Resampler, Splits

POOL, TEST, SYNTHETIC = 0, 255, 77


def identities(images: np.ndarray) -> list[list[int]]:
    """(origin, index, synthetic) per image."""
    row = images[:, 0, :4, 0].astype(int)
    return [[int(r[0]), int(r[1]) * 256 + int(r[2]), int(r[3] == SYNTHETIC)] for r in row]


def _log(path: str, record: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def read_log(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()] if Path(path).exists() else []


class TaggedImages(Dataset):
    """Learnable random images whose first row tells where they came from."""

    name = "tagged"

    class Params(Params):
        n_pool: int = 120
        n_test: int = 30

    def load(self, data_dir, *, progress=False):
        rng = np.random.default_rng(0)

        def make(n, origin):
            labels = np.arange(n) % 3
            images = rng.integers(0, 60, (n, 12, 12, 1)).astype(np.uint8)
            images[:, 4:, :, 0] += (labels * 60).astype(np.uint8)[:, None, None]
            images[:, 0, 0, 0] = origin
            images[:, 0, 1, 0] = np.arange(n) // 256
            images[:, 0, 2, 0] = np.arange(n) % 256
            images[:, 0, 3, 0] = 0
            return images, labels.astype(np.int64)

        pool_x, pool_y = make(self.params.n_pool, POOL)
        test_x, test_y = make(self.params.n_test, TEST)
        n_train = self.params.n_pool * 3 // 4
        return Splits(
            pool_x[:n_train],
            pool_y[:n_train],
            pool_x[n_train:],
            pool_y[n_train:],
            test_x,
            test_y,
            class_names=["a", "b", "c"],
            source="tagged",
            md5="tagged",
        )


class SpyPreprocessor(Preprocessor):
    """Logs the images it is fitted on and those it transforms."""

    name = "spy-preprocessor"

    class Params(Params):
        log: str

    def fit(self, images, labels):
        _log(self.params.log, {"event": "fit", "ids": identities(images)})
        return self

    def transform(self, images):
        _log(self.params.log, {"event": "transform", "ids": identities(images)})
        return images


class SpyResampler(Resampler):
    """Logs what it is fitted on, then duplicates class-0 images tagged as synthetic."""

    name = "spy-resampler"

    class Params(Params):
        log: str

    def fit_resample(self, images, labels, *, random_state):
        _log(self.params.log, {"event": "resample", "ids": identities(images)})
        extra = images[labels == 0].copy()
        extra[:, 0, 3, 0] = SYNTHETIC
        return np.concatenate([images, extra]), np.concatenate([labels, labels[labels == 0]])


class SpyAugmenter(Augmenter):
    """Logs the identities of every training batch it augments."""

    name = "spy-augmenter"

    class Params(Params):
        log: str

    def __call__(self, batch, generator):
        first_row = (batch[:, 0, 0, :4] * 255).round().to(torch.int64).cpu().numpy()
        ids = [[int(r[0]), int(r[1]) * 256 + int(r[2]), int(r[3] == SYNTHETIC)] for r in first_row]
        _log(self.params.log, {"event": "augment", "ids": ids})
        return batch


class ExplodingModel(Model):
    """Fails on demand: at build time, or with NaN outputs during training."""

    name = "exploding"

    class Params(Params):
        how: str = Field("build", pattern="^(build|nan)$")

    def build(self, in_channels, num_classes, image_size):
        if self.params.how == "build":
            raise RuntimeError("this model refuses to be built")

        class NaNNet(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = torch.nn.Linear(in_channels * image_size * image_size, num_classes)

            def forward(self, x):
                return self.linear(x.flatten(1)) * float("nan")

        return NaNNet()


class SlowDown(Regularizer):
    """Sleeps after every epoch (for kill-and-resume tests). With ``until``, it first touches ``until + '.waiting'``
    and then waits for the file ``until`` to exist, so a test can stop a run while its cells are surely running."""

    name = "slow-down"

    class Params(Params):
        seconds: float = 0.5
        until: str | None = None

    def on_epoch_end(self, epoch, logs, model):
        import time
        from pathlib import Path

        if self.params.until:
            Path(self.params.until + ".waiting").touch()
            deadline = time.monotonic() + 300
            while not Path(self.params.until).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(self.params.seconds)
        return False


class FailsWhile(Regularizer):
    """Fails every training it takes part in while the file ``flag`` exists (a transient failure: out of memory on a
    busy GPU, say)."""

    name = "fails-while"

    class Params(Params):
        flag: str

    def configure_model(self, model):
        from pathlib import Path

        if Path(self.params.flag).exists():
            raise RuntimeError("out of memory (simulated while the flag file exists)")
        return model


@hookimpl
def register_datasets(register):
    register(TaggedImages)


@hookimpl
def register_preprocessors(register):
    register(SpyPreprocessor)
    register(SpyResampler)


@hookimpl
def register_augmenters(register):
    register(SpyAugmenter)


@hookimpl
def register_models(register):
    register(ExplodingModel)


@hookimpl
def register_regularizers(register):
    register(SlowDown)
    register(FailsWhile)
