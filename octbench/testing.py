"""Conformance kit: named checks every technique of a kind must pass, for built-ins and third-party plugins.

In a plugin's own tests, one line runs every check that applies to each class::

    from octbench.testing import parametrize_with_checks
    from my_plugins import Gamma, MyResampler

    @parametrize_with_checks([Gamma, MyResampler])
    def test_conformance(technique, check):
        check(technique)

Set ``example_params`` on a class whose parameters have no defaults. Each failure is a ``ConformanceError``
naming the technique, the check and what went wrong.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from octbench.cell.stack_train import numeric_keys, settings_tensors
from octbench.cell.train import to_device, train
from octbench.errors import PluginError
from octbench.plugins import NAME_PATTERN
from octbench.suite import Train
from octbench.technique import (
    Augmenter,
    Dataset,
    Executor,
    Metric,
    Model,
    Optimizer,
    Preprocessor,
    Regularizer,
    ReportSection,
    Resampler,
    Splits,
    Technique,
)

Check = Callable[[type[Technique]], None]


class ConformanceError(AssertionError):
    pass


class ConformanceSkip(Exception):
    """A check that does not apply to this technique (``parametrize_with_checks`` turns it into a pytest skip)."""


def _skip(reason: str) -> None:
    raise ConformanceSkip(reason)


def _devices() -> list[str]:
    """Where device checks run: the CPU, and CUDA when this machine has it."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _fail(cls: type[Technique], check: str, problem: str) -> None:
    raise ConformanceError(
        f"{getattr(cls, 'kind', 'technique')} '{getattr(cls, 'name', cls.__name__)}' fails {check}: {problem}"
    )


def _make(cls: type[Technique], **override) -> Technique:
    return cls.from_config({**cls.example_params, **override})


def _images(n: int, channels: int, size: int = 16, seed: int = 0, low: int = 0, high: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, (n, size, size, channels), dtype=np.uint8)


# --- every kind -----------------------------------------------------------------------------------------------


def check_declaration(cls):
    """A valid name, a one-line summary, and a Params model that rejects unknown keys."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        _fail(cls, "check_declaration", f"name {name!r} is not lowercase letters, digits, '-', '_' or '.'")
    if not (cls.__dict__.get("__doc__") or "").strip():
        _fail(cls, "check_declaration", "has no docstring; its first line is what `octbench plugins` shows")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, BaseModel)):
        _fail(cls, "check_declaration", "Params must be a pydantic model (subclass octbench.params.Params)")
    if cls.Params.model_config.get("extra") != "forbid":
        _fail(cls, "check_declaration", "Params must forbid unknown keys (subclass octbench.params.Params)")


def check_parameters_validated(cls):
    """Builds from its example parameters; an unknown parameter is a PluginError naming the technique."""
    try:
        _make(cls)
    except PluginError as exc:
        _fail(cls, "check_parameters_validated", f"cannot be built from example_params: {exc}")
    try:
        _make(cls, not_a_parameter=1)
    except PluginError as exc:
        if cls.name not in str(exc) or "not_a_parameter" not in str(exc):
            _fail(cls, "check_parameters_validated", f"the error for an unknown parameter is unclear: {exc}")
    else:
        _fail(cls, "check_parameters_validated", "accepted an unknown parameter 'not_a_parameter'")


def check_fresh_instances(cls):
    """A new instance holds no learned state (attributes ending in '_') and shares nothing mutable."""
    a, b = _make(cls), _make(cls)
    learned = [k for k in vars(a) if k.endswith("_")]
    if learned:
        _fail(cls, "check_fresh_instances", f"the constructor sets learned state {learned}; set it in fit")
    shared = [
        k
        for k, v in vars(a).items()
        if k != "params" and not isinstance(v, (int, float, str, bool, type(None))) and v is vars(b).get(k)
    ]
    if shared:
        _fail(cls, "check_fresh_instances", f"instances share mutable attributes {shared}")


def check_input_files(cls):
    """``input_files`` (the files whose content keys a cell's stored result) is a list of paths of existing files."""
    named = _make(cls).input_files()
    if not isinstance(named, list | tuple) or not all(isinstance(f, str | os.PathLike) for f in named):
        _fail(cls, "check_input_files", f"input_files() returned {named!r}: a list of paths")
    missing = [str(f) for f in named if not Path(f).expanduser().is_file()]
    if missing:
        _fail(cls, "check_input_files", f"input_files() names files that are not there: {missing}")


# --- preprocessors -------------------------------------------------------------------------------------------


def check_preprocessor_shapes(cls):
    """Grayscale and RGB: fit returns self; transform keeps N, H, W and C (only N when it declares ``changes_shape``);
    dtype uint8 or float32; input untouched."""
    for channels in (1, 3):
        images, labels = _images(12, channels), np.arange(12) % 3
        before = images.copy()
        step = _make(cls)
        if step.fit(images, labels) is not step:
            _fail(cls, "check_preprocessor_shapes", "fit must return self")
        out = step.transform(images)
        same = out.shape == images.shape if cls.changes_shape is False else out.ndim == 4 and len(out) == len(images)
        if not isinstance(out, np.ndarray) or not same:
            got = getattr(out, "shape", type(out).__name__)
            _fail(cls, "check_preprocessor_shapes", f"{channels}-channel input {images.shape} came back as {got}")
        if out.dtype not in (np.uint8, np.float32):
            _fail(cls, "check_preprocessor_shapes", f"output dtype {out.dtype}; use uint8 or float32")
        if not np.array_equal(images, before):
            _fail(cls, "check_preprocessor_shapes", "modified its input in place")


def check_preprocessor_deterministic(cls):
    """Two fresh instances fitted on the same data transform identically."""
    images, labels = _images(12, 1), np.arange(12) % 3
    first = _make(cls).fit(images, labels).transform(images)
    second = _make(cls).fit(images, labels).transform(images)
    if not np.array_equal(first, second):
        _fail(cls, "check_preprocessor_deterministic", "two fresh instances gave different outputs")


def check_preprocessor_subset_invariant(cls):
    """Fitted on a training part, it transforms each image on its own: the transform of a subset equals the subset
    of the transform. Otherwise the test split's images would change one another's preprocessing (a leak)."""
    images, labels = _images(24, 1), np.arange(24) % 3
    step = _make(cls).fit(images[:12], labels[:12])
    whole = step.transform(images)
    subset = [3, 5, 13, 20]
    alone = step.transform(images[subset])
    if not np.allclose(np.asarray(whole)[subset], alone, rtol=1e-5, atol=1e-5):
        _fail(
            cls,
            "check_preprocessor_subset_invariant",
            "transforming a subset of images gives other values than transforming them with the rest: its output "
            "for an image must not depend on the other images it is given",
        )


def check_stateless_preprocessor(cls):
    """A preprocessor declared ``stateless`` transforms each image on its own: fitting on other data, or not at
    all, changes nothing, and transforming a batch equals transforming its images one by one."""
    if not getattr(cls, "stateless", False):
        _skip("not declared stateless")
    images = _images(6, 1)
    unfitted = _make(cls).transform(images)
    fitted = _make(cls).fit(_images(6, 1, seed=9), np.zeros(6)).transform(images)
    one_by_one = np.concatenate([_make(cls).transform(images[i : i + 1]) for i in range(len(images))])
    if not (np.array_equal(unfitted, fitted) and np.array_equal(unfitted, one_by_one)):
        _fail(cls, "check_stateless_preprocessor", "is declared stateless but its output depends on other images")


# --- resamplers ----------------------------------------------------------------------------------------------


def _imbalanced(channels: int) -> tuple[np.ndarray, np.ndarray]:
    """40 majority images in 0..150 and 12 minority images, 9 in 90..220 and 3 that look like the majority
    (border cases, which ADASYN and borderline-SMOTE need). Nothing reaches 221..255."""
    majority = _images(40, channels, seed=1, low=0, high=151)
    minority = np.concatenate(
        [_images(9, channels, seed=2, low=90, high=221), _images(3, channels, seed=3, low=0, high=151)]
    )
    return np.concatenate([majority, minority]), np.array([0] * 40 + [1] * 12)


def check_resampler_output(cls):
    """Grayscale and RGB: shape, dtype and label set preserved; labels and images agree in length."""
    for channels in (1, 3):
        images, labels = _imbalanced(channels)
        out, out_labels = _make(cls).fit_resample(images, labels, random_state=0)
        if out.shape[1:] != images.shape[1:] or out.dtype != images.dtype:
            _fail(cls, "check_resampler_output", f"{images.shape} {images.dtype} became {out.shape} {out.dtype}")
        if len(out) != len(out_labels) or not set(np.unique(out_labels)) <= {0, 1}:
            _fail(cls, "check_resampler_output", "labels do not match the images or include unknown classes")


def check_resampler_deterministic(cls):
    """The same random_state gives the same result."""
    images, labels = _imbalanced(1)
    a = _make(cls).fit_resample(images, labels, random_state=3)
    b = _make(cls).fit_resample(images, labels, random_state=3)
    if not (np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])):
        _fail(cls, "check_resampler_deterministic", "two runs with random_state=3 differ")


def check_resampler_sees_training_data_only(cls):
    """Every output image derives from the training images it was given: per class, each pixel stays within that
    class's range in the input. An image from anywhere else (a held-out fold, the test split) breaks this."""
    images, labels = _imbalanced(1)
    out, out_labels = _make(cls).fit_resample(images, labels, random_state=0)
    for c in (0, 1):
        given, made = images[labels == c], out[out_labels == c]
        if len(made) and ((made < given.min(0)).any() or (made > given.max(0)).any()):
            _fail(
                cls,
                "check_resampler_sees_training_data_only",
                f"produced class-{c} images outside the range of the class-{c} training images it was given: "
                "resamplers may only use the training part they are handed",
            )


# --- augmenters ----------------------------------------------------------------------------------------------


def check_augmenter_batch(cls):
    """Grayscale and RGB batches, on the CPU and on CUDA when present: same shape, dtype and device; seeded
    generators give identical output."""
    for device, channels in ((d, c) for d in _devices() for c in (1, 3)):
        batch = torch.rand(8, channels, 28, 28, generator=torch.Generator().manual_seed(0)).to(device)
        before = batch.clone()
        out = _make(cls)(batch, torch.Generator(device=device).manual_seed(1))
        if not isinstance(out, torch.Tensor) or out.shape != batch.shape or out.dtype != batch.dtype:
            _fail(
                cls, "check_augmenter_batch", f"{tuple(batch.shape)} float32 came back as {getattr(out, 'shape', out)}"
            )
        if out.device != batch.device:
            _fail(cls, "check_augmenter_batch", "moved the batch to another device")
        if not torch.equal(batch, before):
            _fail(cls, "check_augmenter_batch", "modified the batch in place")
        again = _make(cls)(batch, torch.Generator(device=device).manual_seed(1))
        if not torch.equal(out, again):
            _fail(cls, "check_augmenter_batch", "is not deterministic for a seeded generator")


def check_stacked_augment_matches_call(cls):
    """An augmenter with ``apply_stacked`` gives three members' stacked batch what three calls give each member's
    batch with its own generator."""
    if not cls.stacks():
        _skip("it has no apply_stacked: a stack augments each member's batch on its own")
    for device in _devices():
        batches = [torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(g)).to(device) for g in range(3)]
        alone = [_make(cls)(b, torch.Generator(device=device).manual_seed(10 + g)) for g, b in enumerate(batches)]
        generators = [torch.Generator(device=device).manual_seed(10 + g) for g in range(3)]
        together = _make(cls).apply_stacked(torch.cat(batches), generators)
        if not torch.allclose(together, torch.cat(alone), rtol=1e-5, atol=1e-6):
            _fail(cls, "check_stacked_augment_matches_call", "a member's stacked batch differs from its own call's")


# --- models --------------------------------------------------------------------------------------------------


def check_model_shapes(cls):
    """Builds for 1 and 3 channels, 2 to 5 classes, at each promised image size, on the CPU and on CUDA when
    present; logits (B, classes); one backward pass gives every parameter a finite gradient."""
    for device, size in ((d, s) for d in _devices() for s in cls.image_sizes):
        for channels, classes in ((1, 4), (3, 2), (3, 5)):
            try:
                model = _make(cls).build(channels, classes, size).to(device)
                out = model(torch.rand(2, channels, size, size, device=device))
            except Exception as exc:
                _fail(
                    cls,
                    "check_model_shapes",
                    f"built for {channels} channel(s), {classes} classes at {size}px, "
                    f"it failed on a ({2}, {channels}, {size}, {size}) batch: {exc}",
                )
            if tuple(out.shape) != (2, classes):
                _fail(cls, "check_model_shapes", f"returned {tuple(out.shape)} logits, expected (2, {classes})")
            out.float().sum().backward()
            missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
            if missing:
                _fail(cls, "check_model_shapes", f"parameters that get no gradient (unused?): {missing[:5]}")
            if any(not torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None):
                _fail(cls, "check_model_shapes", "some parameters got non-finite gradients")


def check_model_explains(cls):
    """The report's class-activation map (``octbench.cell.attribution.grad_cam``, at the layer the model names in
    ``attribution_layer``, else the output of its last feature stage) works at each promised image size: maps
    (N, h, w) in [0, 1], the model left in the mode it was in; or the model has no spatial feature map and says so
    (the report then shows 'not available for this model')."""
    from octbench.cell import attribution

    for size in cls.image_sizes:
        technique = _make(cls)
        model = technique.build(1, 3, size)
        model.train()
        try:
            named = technique.attribution_layer(model)
            maps, _layer = attribution.grad_cam(model, torch.rand(2, 1, size, size), np.array([0, 2]), named)
        except attribution.Unavailable:
            return
        except Exception as exc:
            _fail(cls, "check_model_explains", f"Grad-CAM failed at {size}px: {type(exc).__name__}: {exc}")
        if maps.ndim != 3 or len(maps) != 2 or not (np.all(maps >= 0) and np.all(maps <= 1)):
            _fail(cls, "check_model_explains", f"maps of shape {maps.shape} outside [0, 1] at {size}px")
        if not model.training:
            _fail(cls, "check_model_explains", "explaining left the model in eval mode")


# --- regularizers --------------------------------------------------------------------------------------------


def _tiny_training(cls, reg: Regularizer | None = None) -> list[dict]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (48, 12, 12, 1), dtype=np.uint8)
    y = np.arange(48) % 3
    x[y == 1, :6] //= 3
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 144, 8),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(8, 3),
    )
    reg = reg or _make(cls)
    model = reg.configure_model(model)
    config = Train(epochs=2, batch_size=8, device="cpu")
    result = train(
        model,
        to_device(x[:36], y[:36], device),
        to_device(x[36:], y[36:], device),
        config=config,
        epochs=2,
        augmenters=[],
        regularizers=[reg],
        seed=0,
        num_classes=3,
    )
    return result.history


def check_regularizer_trains(cls):
    """A two-epoch run with it completes with finite losses, and fresh instances reproduce it exactly."""
    try:
        first = _tiny_training(cls)
    except Exception as exc:
        _fail(cls, "check_regularizer_trains", f"broke a two-epoch training run: {type(exc).__name__}: {exc}")
    if not first or not all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in first):
        _fail(cls, "check_regularizer_trains", "training losses were not finite")
    second = _tiny_training(cls)
    strip = lambda hs: [{k: v for k, v in h.items() if k != "seconds"} for h in hs]  # noqa: E731
    if strip(first) != strip(second):
        _fail(cls, "check_regularizer_trains", "two runs with fresh instances differ: state leaks between cells?")


def check_test_views(cls):
    """A regularizer with ``test_views`` (test-time augmentation) gives a list of views shaped like the evaluation
    batch, on its device and dtype, the same for the same batch from fresh instances, without touching the batch;
    and it is never asked for views while a model trains (a spy counts the calls during a two-epoch run)."""
    if not cls.augments_tests():
        _skip("does not define test_views")
    batch = torch.rand(5, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    before = batch.clone()
    views = _make(cls).test_views(batch)
    if not isinstance(views, list) or not views or not all(isinstance(v, torch.Tensor) for v in views):
        _fail(
            cls, "check_test_views", f"test_views must return a non-empty list of tensors, not {type(views).__name__}"
        )
    wrong = [tuple(v.shape) for v in views if (v.shape, v.dtype, v.device) != (batch.shape, batch.dtype, batch.device)]
    if wrong:
        _fail(cls, "check_test_views", f"views must be like the batch {tuple(batch.shape)}, float32, CPU: got {wrong}")
    if not torch.equal(batch, before):
        _fail(cls, "check_test_views", "modified the evaluation batch in place")
    again = _make(cls).test_views(batch)
    if len(again) != len(views) or not all(torch.equal(a, b) for a, b in zip(views, again, strict=False)):
        _fail(cls, "check_test_views", "two fresh instances gave different views of the same batch")
    spy, calls = _make(cls), []
    real = spy.test_views
    spy.test_views = lambda images: calls.append(images.shape) or real(images)
    _tiny_training(cls, spy)
    if calls:
        _fail(cls, "check_test_views", f"test_views was called {len(calls)} times during training")


# --- datasets ------------------------------------------------------------------------------------------------


def check_dataset_layout(cls):
    """Offline datasets: MedMNIST's layout, uint8 (N, H, W, C) images, labels in range, same shape everywhere."""
    if not cls.offline:
        _skip("needs files or a download (offline = False)")
    data = _make(cls).load(None)
    if not isinstance(data, Splits):
        _fail(cls, "check_dataset_layout", "load must return octbench.technique.Splits")
    shape = data.train_images.shape[1:]
    for split in ("train", "val", "test"):
        images, labels = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != shape or len(images) != len(labels):
            _fail(cls, "check_dataset_layout", f"{split} images {images.shape} {images.dtype} break the layout")
        if labels.min() < 0 or labels.max() >= data.num_classes:
            _fail(cls, "check_dataset_layout", f"{split} labels fall outside 0..{data.num_classes - 1}")


def check_optimizer_steps(cls):
    """Builds over a small model's parameters and one step moves them, finitely."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = _make(cls).build(model.parameters(), lr=0.01, weight_decay=0.0, device=torch.device("cpu"))
    if not isinstance(optimizer, torch.optim.Optimizer):
        _fail(cls, "check_optimizer_steps", f"build returned {type(optimizer).__name__}, not a torch optimizer")
    torch.nn.functional.cross_entropy(model(torch.rand(8, 4)), torch.arange(8) % 3).backward()
    optimizer.step()
    after = list(model.parameters())
    if all(torch.equal(a, b) for a, b in zip(before, after, strict=True)):
        _fail(cls, "check_optimizer_steps", "one step left every parameter unchanged")
    if not all(torch.isfinite(p).all() for p in after):
        _fail(cls, "check_optimizer_steps", "one step made parameters non-finite")


def check_stacked_update_matches_build(cls):
    """An optimizer with ``update`` steps a stack of three members as ``build``'s optimizer steps each alone, with
    each member's own learning rate and weight decay, and leaves a member whose mask is 0 exactly as it was."""
    if not cls.stacks():
        _skip("it has no update: a stack steps each member's own optimizer")
    problem = stacked_update_problem(_make(cls))
    if problem:
        _fail(cls, "check_stacked_update_matches_build", problem)


def stacked_update_problem(technique: Optimizer) -> str | None:
    """How ``technique.update`` over three stacked members (each with its own learning rate and weight decay, one
    of them sitting a step out) departs from ``technique.build``'s optimizer stepping each alone, or None."""
    generator = torch.Generator().manual_seed(0)
    members, shapes, lrs, decays = 3, [(4, 3), (3,)], [0.1, 0.01, 0.05], [0.0, 0.01, 0.1]
    stacked = [torch.randn(members, *shape, generator=generator) for shape in shapes]
    own = [[t[g].clone().requires_grad_() for t in stacked] for g in range(members)]
    cpu = torch.device("cpu")
    optimizers = [technique.build(own[g], lr=lrs[g], weight_decay=decays[g], device=cpu) for g in range(members)]
    state: dict = {}
    for mask in ([1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]):
        grads = [torch.randn(members, *shape, generator=generator) for shape in shapes]
        groups = [optimizer.param_groups[0] for optimizer in optimizers]
        hyper = settings_tensors(groups, numeric_keys(groups), cpu)
        before = [t.clone() for t in stacked]
        technique.update(stacked, grads, state, {**hyper, "mask": torch.tensor(mask, dtype=torch.float32)})
        for g in range(members):
            if not mask[g]:
                if not all(torch.equal(now[g], then[g]) for now, then in zip(stacked, before, strict=True)):
                    return f"member {g}, whose mask was 0, changed"
                continue
            for tensor, grad in zip(own[g], grads, strict=True):
                tensor.grad = grad[g].clone()
            optimizers[g].step()
            for tensor, whole in zip(own[g], stacked, strict=True):
                if not torch.allclose(whole[g], tensor.detach(), rtol=1e-5, atol=1e-6):
                    return f"member {g} stepped unlike build's optimizer (largest difference {_gap(whole[g], tensor)})"
    return None


def _gap(a: torch.Tensor, b: torch.Tensor) -> str:
    return f"{(a - b.detach()).abs().max().item():.2e}"


def check_metric_value(cls):
    """A finite float for binary and four-class predictions, the same twice; perfect predictions are scored at
    least as well as random ones (in the metric's own direction)."""
    rng = np.random.default_rng(0)
    for classes in (2, 4):
        y = np.arange(40) % classes
        random = rng.dirichlet(np.ones(classes), 40)
        perfect = np.eye(classes)[y] * 0.98 + 0.02 / classes
        metric = _make(cls)
        values = [metric.compute(y, random), metric.compute(y, random), metric.compute(y, perfect)]
        if not all(isinstance(v, float | int | np.floating) and np.isfinite(v) for v in values):
            _fail(cls, "check_metric_value", f"returned {values[0]!r}: a metric is a finite number")
        if values[0] != values[1]:
            _fail(cls, "check_metric_value", "gave two values for the same predictions")
        better = values[2] >= values[0] if cls.higher_is_better else values[2] <= values[0]
        if not better:
            _fail(
                cls, "check_metric_value", "scored random predictions better than perfect ones: check higher_is_better"
            )


def check_report_section_renders(cls):
    """Renders a string of HTML from a tiny finished run."""
    import tempfile

    from octbench.report.analysis import analyse
    from octbench.report.collect import load
    from octbench.runner import run_suite

    with tempfile.TemporaryDirectory() as folder:
        suite = Path(folder) / "suite.yaml"
        suite.write_text(TINY_SUITE)
        run_suite(suite, out=Path(folder) / "out", progress=False, check=False)
        results = load([Path(folder) / "out"])
        section, analysis = _make(cls), analyse(results)
        html = section.render(results, analysis)
        figures, rows, sentence = (
            section.figures(results, analysis),
            section.rows(results, analysis),
            section.sentence(results, analysis),
        )
    name = "check_report_section_renders"
    if not isinstance(html, str):
        _fail(cls, name, f"render returned {type(html).__name__}, not a string of HTML")
    if not isinstance(figures, dict) or not all(hasattr(f, "savefig") for f in figures.values()):
        _fail(cls, name, "figures returned something other than {caption: matplotlib figure}")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        _fail(cls, name, "rows returned something other than a list of dicts (one per table row)")
    try:
        json.dumps(rows)
    except (TypeError, ValueError) as exc:
        _fail(cls, name, f"rows cannot be written as JSON ({exc}): give numbers, strings, booleans or None")
    if not isinstance(sentence, str):
        _fail(cls, name, f"sentence returned {type(sentence).__name__}, not a string")


TINY_SUITE = """
name: conformance
dataset: {name: synthetic-oct, n_train: 60, n_val: 20, n_test: 20}
cv: {folds: 2, seeds: [0], val_fraction: 0.2}
train: {epochs: 1, batch_size: 16, device: cpu, threads: 1, precision: fp32}
defaults: {model: {name: cnn, widths: [4], hidden: 4}}
variants: [{name: a}, {name: b}]
"""


def check_executor_runs_every_cell_once(cls):
    """Two stacks of tiny cells (one of two cells): every cell's result comes back once, done, through on_result."""
    import tempfile

    from octbench.plan.run import plan_run
    from octbench.technique import RunContext

    executor = _make(cls)
    try:
        executor.check()
    except Exception as exc:
        _fail(cls, "check_executor_runs_every_cell_once", f"check() refused to run here: {exc}")
    with tempfile.TemporaryDirectory() as folder:  # the plan a run of a tiny suite makes, as `octbench run` makes it
        suite = Path(folder) / "suite.yaml"
        suite.write_text(TINY_SUITE)
        plan = plan_run(suite, device="cpu")
    tasks = plan.tasks
    results = []
    context = RunContext(data=plan.data, plugin_files={}, threads=1, device="cpu", progress=False, host=plan.host)
    executor.run([tasks[:1], tasks[1:3]], results.append, context)
    got = sorted((r.variant, r.seed, r.fold) for r in results)
    wanted = sorted(t.key for t in tasks[:3])
    if got != wanted:
        _fail(cls, "check_executor_runs_every_cell_once", f"results for {got}, expected each of {wanted} once")
    failed = [r.error for r in results if r.status != "done"]
    if failed:
        _fail(cls, "check_executor_runs_every_cell_once", f"a tiny cell failed: {failed[0]}")


def _slow_checks() -> dict:
    import pytest

    return {check: (pytest.mark.slow,) for check in (check_executor_runs_every_cell_once, check_report_section_renders)}


COMMON: list[Check] = [check_declaration, check_parameters_validated, check_fresh_instances, check_input_files]
BY_BASE: list[tuple[type, list[Check]]] = [
    (Resampler, [check_resampler_output, check_resampler_deterministic, check_resampler_sees_training_data_only]),
    (
        Preprocessor,
        [
            check_preprocessor_shapes,
            check_preprocessor_deterministic,
            check_preprocessor_subset_invariant,
            check_stateless_preprocessor,
        ],
    ),
    (Augmenter, [check_augmenter_batch, check_stacked_augment_matches_call]),
    (Model, [check_model_shapes, check_model_explains]),
    (Regularizer, [check_regularizer_trains, check_test_views]),
    (Dataset, [check_dataset_layout]),
    (Executor, [check_executor_runs_every_cell_once]),
    (Optimizer, [check_optimizer_steps, check_stacked_update_matches_build]),
    (Metric, [check_metric_value]),
    (ReportSection, [check_report_section_renders]),
]


def checks_for(cls: type[Technique]) -> list[Check]:
    """Every check that applies to ``cls``, common ones first."""
    specific = next((checks for base, checks in BY_BASE if issubclass(cls, base)), [])
    return [*COMMON, *specific]


def check_technique(cls: type[Technique]) -> list[str]:
    """Run every check (outside pytest); raises the first ConformanceError, returns the checks that did not apply."""
    skipped = []
    for check in checks_for(cls):
        try:
            check(cls)
        except ConformanceSkip as skip:
            skipped.append(f"{check.__name__}: {skip}")
    return skipped


def parametrize_with_checks(classes: Iterable[type[Technique]]):
    """A pytest parametrize decorator over (technique, check) pairs, with readable ids like 'clahe-check_...'."""
    import pytest

    def skipping(check: Check) -> Check:
        @functools.wraps(check)
        def run(cls):
            try:
                check(cls)
            except ConformanceSkip as skip:
                pytest.skip(f"{check.__name__} does not apply to {cls.name}: {skip}")

        return run

    slow = _slow_checks()  # checks that train a run: marked slow, out of a `-m "not slow"` tier
    pairs = [
        pytest.param(cls, skipping(check), id=f"{cls.name}-{check.__name__}", marks=slow.get(check, ()))
        for cls in classes
        for check in checks_for(cls)
    ]
    return pytest.mark.parametrize(("technique", "check"), pairs)
