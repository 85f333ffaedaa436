"""The conformance kit over every built-in technique, and broken plugins it must catch."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from torch import nn

from octbench import kinds
from octbench.plugins import PluginHost, distribution_of
from octbench.technique import Model, Regularizer, Resampler
from octbench.testing import COMMON, ConformanceError, check_technique, checks_for, parametrize_with_checks

# octbench's own: an installed plugin package (examples/octbench-extra in CI) runs its own conformance tests
BUILTINS = [reg.cls for reg in PluginHost.load().all() if distribution_of(reg.cls)[0] == "octbench"]
HAS_TIMM = importlib.util.find_spec("timm") is not None


@parametrize_with_checks(BUILTINS)
def test_builtin_conforms(technique, check):
    if technique.name == "timm" and not HAS_TIMM and check.__name__ in ("check_model_shapes", "check_model_explains"):
        pytest.skip("timm is an optional dependency and is not installed here")
    check(technique)


def test_every_kind_has_specific_checks():
    """Each of octbench's kinds (``octbench.kinds``) has checks of its own beyond the common ones."""
    for kind in kinds.kinds():
        for base in kinds.bases(kind):
            assert len(checks_for(base)) > len(COMMON), f"the conformance kit has no check specific to a {kind}"


HELD_OUT = np.full((5, 16, 16, 1), 250, dtype=np.uint8)  # stands for images a resampler must never see


class PeekingResampler(Resampler):
    """Adds held-out images to the training part (a leak)."""

    name = "peeking"

    def fit_resample(self, images, labels, *, random_state):
        extra = np.repeat(HELD_OUT, images.shape[-1], axis=-1)
        return np.concatenate([images, extra]), np.concatenate([labels, np.ones(len(extra), dtype=labels.dtype)])


class OneChannelModel(Model):
    """Ignores the channel count it is given."""

    name = "one-channel"

    def build(self, in_channels, num_classes, image_size):
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(num_classes))


class NoDocstring(Model):
    name = "no-doc"

    def build(self, in_channels, num_classes, image_size):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


NoDocstring.__doc__ = None


class CroppingViews(Regularizer):
    """Test-time views that crop the image (the model would see another size at evaluation)."""

    name = "cropping-views"

    def test_views(self, images):
        return [images, images[..., 1:-1, 1:-1]]


class ViewsWhileTraining(Regularizer):
    """Asks for test-time views of its training batches (evaluation leaking into training)."""

    name = "views-in-training"

    def on_batch(self, images, targets, generator):
        return self.test_views(images)[0], targets

    def test_views(self, images):
        return [images, images.flip(-1)]


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (PeekingResampler, "preprocessor 'peeking' fails check_resampler_sees_training_data_only: produced class-1"),
        (OneChannelModel, "model 'one-channel' fails check_model_shapes: built for 3 channel(s), 2 classes at 28px"),
        (NoDocstring, "model 'no-doc' fails check_declaration: has no docstring"),
        (CroppingViews, "regularizer 'cropping-views' fails check_test_views: views must be like the batch (5, 1, 12"),
        (ViewsWhileTraining, "regularizer 'views-in-training' fails check_test_views: test_views was called"),
    ],
)
def test_broken_plugins_fail_the_kit_readably(cls, message):
    with pytest.raises(ConformanceError) as info:
        check_technique(cls)
    assert message in str(info.value)
