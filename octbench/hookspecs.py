"""The plugin contract: every technique, built-in or third-party, arrives through one of these hooks.

Each hook is handed a ``register`` callback; call it once per class you provide::

    from octbench import hookimpl
    from octbench.technique import Preprocessor

    class Invert(Preprocessor):
        '''Invert intensities.'''
        name = "invert"
        def transform(self, images):
            return 255 - images

    @hookimpl
    def register_preprocessors(register):
        register(Invert)

The base classes the registered classes derive from are in ``octbench.technique``; their parameters are
declared as a pydantic model named ``Params`` on the class and validated before any training starts.
"""

import pluggy

hookspec = pluggy.HookspecMarker("octbench")
hookimpl = pluggy.HookimplMarker("octbench")


@hookspec
def register_datasets(register):
    """Register ``octbench.technique.Dataset`` subclasses: sources of train/val/test images and labels."""


@hookspec
def register_preprocessors(register):
    """Register ``Preprocessor`` (fitted transforms) and ``Resampler`` subclasses (training part only)."""


@hookspec
def register_augmenters(register):
    """Register ``Augmenter`` subclasses: random batch transforms applied at training time only."""


@hookspec
def register_models(register):
    """Register ``Model`` subclasses: builders of a torch module for given channels, classes and size."""


@hookspec
def register_regularizers(register):
    """Register ``Regularizer`` subclasses: anything that changes training (losses, schedules, stopping)."""


@hookspec
def register_optimizers(register):
    """Register ``Optimizer`` subclasses: builders of a torch optimizer, named by a suite's ``train.optimizer``."""


@hookspec
def register_metrics(register):
    """Register ``Metric`` subclasses: numbers computed for every cell on each split, shown and compared."""


@hookspec
def register_report_sections(register):
    """Register ``ReportSection`` subclasses: sections appended to the HTML report."""


@hookspec
def register_executors(register):
    """Register ``Executor`` subclasses: ways to run a suite's cells (local processes, a Ray cluster, SLURM...)."""


@hookspec
def register_commands(cli):
    """Add commands to the ``octbench`` command line: ``cli`` is its click group (``cli.add_command(my_group)``).
    A dataset plugin's own commands live with it (MedMNIST's ``octbench data``); a name the core uses is refused."""
