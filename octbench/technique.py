"""Base classes for techniques, in the manner of scikit-learn estimators.

Constructors only store validated parameters; state learned by ``fit`` ends in ``_``; every cell builds fresh
instances from the suite, so nothing fitted is ever shared between cells.

Images outside the model are numpy arrays shaped (N, H, W, C): uint8 in 0..255, or float32 already scaled.
Inside training they are torch tensors shaped (B, C, H, W), float, on the compute device.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from octbench.params import Params, validate_params


class Technique:
    """Something a suite can name. Subclasses set ``name`` and may declare a nested ``Params`` model."""

    name: ClassVar[str]
    kind: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    #: parameters the conformance kit (``octbench.testing``) builds instances with; set it when some are required
    example_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: Params | None = None, **kwargs: Any) -> None:
        if params is None:
            params = validate_params(self.Params, self.name, kwargs)
        elif kwargs:
            raise TypeError("pass either a Params instance or keyword parameters, not both")
        self.params = params

    @classmethod
    def from_config(cls, raw: dict[str, Any]) -> Technique:
        return cls(validate_params(cls.Params, cls.name, raw))

    @classmethod
    def summary(cls) -> str:
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{type(self).__name__}({args})"

    def cell_values(self) -> dict[str, float]:
        """Numbers this technique reports about the cell it took part in (the epoch early stopping chose, say),
        asked once the cell has trained; stored with the cell and summarised per variant in the report."""
        return {}

    def notes(self, variant: Any) -> list[str]:
        """What a user choosing this technique as configured should know (an assumption it makes about the images),
        given the resolved variant it is part of (``octbench.suite.Variant``): `octbench check` and `octbench run`
        print it, and the variant's section of the report shows it. None by default."""
        return []

    def input_files(self) -> list[Any]:
        """Files this technique reads whose content shapes a cell's result (a checkpoint a model starts from): a
        stored result is keyed on their content, so replacing one reruns the cells that use it
        (``octbench.plan.dependencies``). The dataset's own files are keyed by its ``md5``."""
        return []


class Preprocessor(Technique):
    """A transform fitted on a fold's training part and then applied to every split of that cell."""

    kind: ClassVar[str] = "preprocessor"
    #: True when ``transform`` depends on each image alone and ``fit`` learns nothing (CLAHE, equalisation):
    #: octbench then transforms the whole dataset once and caches it, instead of once per cell
    stateless: ClassVar[bool] = False
    #: True when ``transform`` changes the image size or the number of channels (grayscale to RGB, a resize): the
    #: model is built for the shape the pipeline produces, and the conformance kit checks only the image count
    changes_shape: ClassVar[bool] = False

    def fit(self, images: np.ndarray, labels: np.ndarray, *, random_state: int | None = None) -> Preprocessor:
        """Learn from the fold's training part only. ``random_state`` is the cell's seed (octbench passes it when
        ``fit`` accepts it): use it for any sampling, so a cell repeats exactly."""
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Resampler(Technique):
    """Changes the training part only (adds or removes samples); never sees held-out or test data.

    Listed under ``preprocessors`` in a suite, in the order it should run.
    """

    kind: ClassVar[str] = "preprocessor"

    def fit_resample(
        self, images: np.ndarray, labels: np.ndarray, *, random_state: int
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class Augmenter(Technique):
    """A random transform of a whole training batch (B, C, H, W) on the compute device. Never used at test time.

    Batches are float tensors. ``value_range`` says what their values span: (0, 1) for images stored as uint8
    (scaled by 1/255), else the training part's (min, max) when a preprocessor made them float (``normalize``
    standardises them); the trainer sets it before training, so clamp to it rather than to [0, 1].
    """

    kind: ClassVar[str] = "augmenter"
    value_range: tuple[float, float] = (0.0, 1.0)

    def __call__(self, batch: Any, generator: Any) -> Any:
        raise NotImplementedError

    def apply_stacked(self, batch: Any, generators: list[Any]) -> Any:
        """Optional: the batches of several stacked cells that share this augmenter (same class, parameters and
        value range) at once, so a stack pays for the transform once. Member g's images are
        ``batch[g*B:(g+1)*B]`` and must get exactly what ``self(those images, generators[g])`` gives them: draw
        from each member's own generator, in the order one call draws. Without it, each member's batch is
        augmented on its own."""
        raise NotImplementedError

    @classmethod
    def stacks(cls) -> bool:
        """Whether this augmenter can augment a stack's batches at once (it defines ``apply_stacked``)."""
        return cls.apply_stacked is not Augmenter.apply_stacked


class Model(Technique):
    """Builds a torch ``nn.Module`` mapping (B, in_channels, size, size) to (B, num_classes) logits."""

    kind: ClassVar[str] = "model"
    #: image sides the model promises to handle; the conformance kit builds and runs it at each
    image_sizes: ClassVar[tuple[int, ...]] = (28,)

    def build(self, in_channels: int, num_classes: int, image_size: int) -> Any:
        raise NotImplementedError

    def attribution_layer(self, model: Any) -> str | None:
        """The name of the module of ``model`` (as ``build`` made it) whose output the report's Grad-CAM maps explain.
        None (the default): the output of the last feature stage, found by octbench
        (``octbench.cell.attribution.feature_layer``); a model whose last stage gives tokens, not a map, gets none."""
        return None


class Regularizer(Technique):
    """Changes training through callbacks; every method has a neutral default, override what you need.

    The trainer calls them in suite order: ``configure_model`` once after the model is built (a fresh model per
    cell, so reset any per-run state there), ``configure_optimizer`` on the optimizer options (``name``, ``lr``,
    ``weight_decay``, ...), ``configure_loss`` on the cross-entropy options (``weight``, ``label_smoothing``),
    ``make_scheduler`` once (return None, or an object with ``step_batch()`` and/or ``step_epoch(logs)``),
    ``on_batch`` on every training batch (with its own seeded generator), ``before_step`` between ``backward`` and
    the optimizer step, ``after_step`` after every optimizer step, ``on_epoch_end`` after each epoch with ``logs``
    holding ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc`` and ``lr`` (return True to stop),
    ``on_train_end`` once at the end, in suite order (so of two regularizers that replace the final weights, e.g.
    ``early-stopping`` and ``ema``, the later one's are evaluated).
    ``self.epoch`` and ``self.epochs`` tell every callback where training is.
    ``test_views`` is the one evaluation hook: test-time augmentation of the held-out fold and the test split.
    """

    kind: ClassVar[str] = "regularizer"
    #: set by the trainer before every callback: the current epoch (0-based) and how many the run trains
    epoch: int = 0
    epochs: int = 0

    def configure_model(self, model: Any) -> Any:
        return model

    def configure_optimizer(self, options: dict[str, Any]) -> dict[str, Any]:
        return options

    def configure_loss(self, options: dict[str, Any], class_counts: np.ndarray) -> dict[str, Any]:
        return options

    def make_scheduler(self, optimizer: Any, epochs: int, steps_per_epoch: int) -> Any:
        return None

    def on_batch(self, images: Any, targets: Any, generator: Any) -> tuple[Any, Any]:
        return images, targets

    def before_step(self, model: Any) -> None:
        """Called after ``backward`` and before every optimizer step, with the gradients in place (gradient
        clipping, gradient noise)."""

    def after_step(self, model: Any) -> None:
        """Called after every optimizer step (weight averaging, constraints)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float], model: Any) -> bool:
        return False

    def on_train_end(self, model: Any) -> None:
        """Called once after the last epoch, e.g. to restore the best weights."""

    @property
    def chooses_final_weights(self) -> bool:
        """True when ``on_train_end`` replaces the weights that are evaluated (the best epoch, an average). Hooks run
        in suite order, so when a variant has two such regularizers the one listed last decides; octbench warns."""
        return False

    def test_views(self, images: Any) -> list[Any] | None:
        """Test-time augmentation: the views of an evaluation batch (B, C, H, W, float, on the device) whose logits
        are averaged, the batch itself usually among them; None (the default) evaluates the batch as it is. Called
        only when the trained model predicts the held-out fold and the test split, never on training or inner
        validation batches; two regularizers with views compose (each view of the first is viewed by the second).
        Views must be deterministic: the same batch always gives the same views."""
        return None

    @classmethod
    def augments_tests(cls) -> bool:
        """Whether this regularizer changes evaluation (it defines ``test_views``)."""
        return cls.test_views is not Regularizer.test_views

    @classmethod
    def evaluation_only(cls) -> bool:
        """Whether this regularizer changes evaluation and nothing of training (it defines ``test_views`` and no
        training hook): its parameters cannot change a search trial's score, which is taken without test views."""
        return cls.augments_tests() and all(getattr(cls, hook) is getattr(Regularizer, hook) for hook in TRAINING_HOOKS)


#: the regularizer hooks that shape training (and so a search trial's inner-validation score)
TRAINING_HOOKS = (
    "configure_model",
    "configure_optimizer",
    "configure_loss",
    "make_scheduler",
    "on_batch",
    "before_step",
    "after_step",
    "on_epoch_end",
    "on_train_end",
)


@dataclass
class Splits:
    """A dataset as MedMNIST lays it out. Images (N, H, W, C) uint8; labels (N,) int64."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    source: str
    md5: str
    meta: dict[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def pool(self) -> tuple[np.ndarray, np.ndarray]:
        """The cross-validation pool, official train + val, concatenated once per loaded dataset."""
        return (
            np.concatenate([self.train_images, self.val_images]),
            np.concatenate([self.train_labels, self.val_labels]),
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[-1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[1])


class Dataset(Technique):
    """A source of images with official train/val/test splits."""

    kind: ClassVar[str] = "dataset"
    #: True when ``load`` needs no files or network, so the conformance kit can load it
    offline: ClassVar[bool] = False

    def load(self, data_dir: str | None, *, progress: bool = False) -> Splits:
        raise NotImplementedError


class Optimizer(Technique):
    """Builds a torch optimizer over a model's parameters. A suite's ``train.optimizer`` names it and gives ``lr``,
    ``weight_decay`` and the plugin's own parameters (``momentum`` for sgd...); regularizers may change all of them
    (``Regularizer.configure_optimizer``) before ``build`` is called with the result."""

    kind: ClassVar[str] = "optimizer"

    def build(self, parameters: Any, *, lr: float, weight_decay: float, device: Any) -> Any:
        raise NotImplementedError

    def update(self, params: list[Any], grads: list[Any], state: dict[str, Any], hyper: dict[str, Any]) -> None:
        """Optional: one step for a stack of cells trained as one computation, so a stack of any size costs the
        same number of kernel launches. ``params[i]`` holds every member's copy of one parameter along its first
        dimension (G, ...), ``grads[i]`` its gradient; ``state`` is this optimizer's own, empty at the first step.
        ``hyper`` holds each member's current optimizer settings as float64 tensors: ``hyper["lr"]`` (G,), and so on
        for every number in the members' param group (``weight_decay``, ``momentum``; a pair such as ``betas`` is
        (G, 2)), as their schedulers have set them: compute a step's numbers from them in float64 (``1 - beta2``),
        as torch's optimizers do from Python floats, and cast the results to the parameters' dtype.
        ``hyper["mask"]`` (G,) is 1 for members that step now and 0 for the others, which must be left exactly as
        they are, parameters and state. Members step as they would
        alone under ``build``'s optimizer, to float rounding. Without it, every member steps its own optimizer."""
        raise NotImplementedError

    @classmethod
    def stacks(cls) -> bool:
        """Whether this optimizer can step a whole stack at once (it defines ``update``)."""
        return cls.update is not Optimizer.update


class Metric(Technique):
    """A number computed for every cell on each split from the labels and the model's probabilities, stored beside
    octbench's own metrics, shown in each variant's table and the exports, and compared with the reference."""

    kind: ClassVar[str] = "metric"
    #: whether a larger value is better (marks a significant difference as better or worse)
    higher_is_better: ClassVar[bool] = True

    def compute(self, y_true: np.ndarray, probs: np.ndarray) -> float:
        raise NotImplementedError


class ReportSection(Technique):
    """A section of the report, computed from the stored results and their analysis
    (``octbench.report.collect.Results``, ``octbench.report.analysis.Analysis``), held to the contract of the
    built-in sections (``octbench.report.section``): the page shows it under a heading named ``title`` (linked from
    the navigation, anchored at ``name``), after the variants.

    ``render`` returns an HTML fragment: escape anything you did not write yourself (``html.escape``). The rest is
    optional: ``figures`` returns matplotlib figures by caption, drawn through the report's figure writer (shown
    under the HTML, and written as SVG, PDF and PNG by ``--figures``); ``rows`` returns the section's table as a
    list of dicts, exported as the JSON key ``name``, the file ``<name>.csv``, and a Markdown and a LaTeX table;
    ``sentence`` returns a sentence for the report's summary. A section whose method raises is left out, with the
    reason, among the page's problems; the rest of the report renders."""

    kind: ClassVar[str] = "report-section"
    title: ClassVar[str] = ""

    def render(self, results: Any, analysis: Any) -> str:
        raise NotImplementedError

    def figures(self, results: Any, analysis: Any) -> dict[str, Any]:
        return {}

    def rows(self, results: Any, analysis: Any) -> list[dict[str, Any]]:
        return []

    def sentence(self, results: Any, analysis: Any) -> str:
        return ""


@dataclass
class RunContext:
    """What an executor gets besides the cells: the loaded dataset (the driver loaded and checked it; ship it rather
    than load it again), the plugin files the suite names (path to content, for machines that lack them), the CPU
    threads every cell must use (results depend on it), the cells' device, and whether to show progress.
    ``datasets`` holds every dataset the cells load (``data`` and any variant's own size of it), for an executor
    that ships them: hand them to the worker's process with ``octbench.dataset.provide_datasets``."""

    data: Splits
    plugin_files: dict[str, bytes]
    threads: int
    device: str
    progress: bool
    host: Any = None
    datasets: dict[Any, Splits] = field(default_factory=dict)


class Executor(Technique):
    """Runs stacks of cells and hands every cell's result back to the driver, which alone writes the store.

    ``run`` gets the stacks (lists of ``octbench.cell.CellTask``; run each with ``octbench.cell.execute_stack``,
    which never raises for a failing cell) and calls ``on_result`` once per cell, in the driver's process and
    thread, as results arrive. A stack that cannot run (its worker or machine lost, a plugin that cannot be
    imported there) is reported as failed results (``octbench.cell.failed_result``) with the reason, not raised.
    Ctrl-C or SIGTERM in the driver raises there (``KeyboardInterrupt``, ``octbench.errors.Interrupted``): stop
    outstanding work and let it propagate.
    """

    kind: ClassVar[str] = "executor"

    def check(self) -> None:
        """Raise ``octbench.errors.OctbenchError`` if this executor cannot run here (a missing package, say), before
        anything is written."""

    def parallelism(self, device: str, stacks: int) -> tuple[int, str]:
        """(stacks run at once, why): what the run's provenance records."""
        return 1, "one stack at a time"

    def threads_per_cell(self) -> int | None:
        """CPU threads a cell should use when the suite does not set ``train.threads`` (None: torch's default on the
        driver). Results depend on it, so set ``train.threads`` to compare executors cell for cell."""
        return None

    def run(self, stacks: list[list[Any]], on_result: Any, context: RunContext) -> None:
        raise NotImplementedError


def __getattr__(name: str) -> Any:
    # {kind: its base classes}, from ``octbench.kinds`` when asked for (kept for readers of earlier versions)
    if name == "KIND_BASES":
        from octbench import kinds

        return {kind: kinds.bases(kind) for kind in kinds.kinds()}
    raise AttributeError(f"module 'octbench.technique' has no attribute {name!r}")
