"""The kinds of plugin octbench knows, named once: the suite, the plugin host, the hooks, the base classes, the
starter kit and the command line all take them from here (a test checks that the hooks and the bases match)."""

from __future__ import annotations

KINDS = (
    "dataset",
    "preprocessor",
    "augmenter",
    "model",
    "regularizer",
    "optimizer",
    "metric",
    "report-section",
    "executor",
)
#: a variant's lists of techniques, by suite key
VARIANT_LISTS = {"preprocessors": "preprocessor", "augmenters": "augmenter", "regularizers": "regularizer"}


def hook_name(kind: str) -> str:
    """The hook a plugin implements to register techniques of ``kind`` (``register_report_sections``...)."""
    return f"register_{kind.replace('-', '_')}s"
