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
declared as a pydantic model named ``Params`` on the class and validated before any training starts. There is a
``register_<kind>s`` hook per kind in ``octbench.kinds`` (generated from it), and ``register_commands``.
"""

from types import SimpleNamespace

import pluggy

from octbench.kinds import REGISTRY, Kind, hook_name

hookspec = pluggy.HookspecMarker("octbench")
hookimpl = pluggy.HookimplMarker("octbench")


def _kind_hook(kind: Kind):
    def hook(register):
        pass

    hook.__name__ = hook.__qualname__ = hook_name(kind.name)
    hook.__doc__ = kind.doc
    return hookspec(hook)


def kind_hooks() -> SimpleNamespace:
    """A hook per kind in ``octbench.kinds.REGISTRY`` as it is now (the plugin host adds these)."""
    return SimpleNamespace(**{hook_name(k.name): _kind_hook(k) for k in REGISTRY.values()})


# the hooks of octbench's own kinds, as module functions for readers and documentation tools
globals().update(vars(kind_hooks()))


@hookspec
def register_commands(cli):
    """Add commands to the ``octbench`` command line: ``cli`` is its click group (``cli.add_command(my_group)``).
    A dataset plugin's own commands live with it (MedMNIST's ``octbench data``); a name the core uses is refused."""


def every_hook() -> SimpleNamespace:
    """Every hook as octbench's kinds are now: one per kind, and ``register_commands``."""
    return SimpleNamespace(**vars(kind_hooks()), register_commands=register_commands)
