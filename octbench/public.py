"""What a plugin author may import, declared in one place. These paths are octbench's contract with plugins: they
keep working from version to version (``tests/test_public.py`` fails when one breaks, and when the guide, the
README, the example package or a starter package imports anything not listed here). Everything else is octbench's
own and may move.

Modules by the five stages of a run (``octbench.runner``): ``octbench.suite`` (what to compare) ->
``octbench.plan`` (checked, cells listed) -> ``octbench.cell`` (one cell trained and scored) -> ``octbench.store``
(results and provenance in SQLite) -> ``octbench.report`` (the page and the exports, built from sections).
"""

from __future__ import annotations

PUBLIC: dict[str, tuple[str, ...]] = {
    "octbench": ("hookimpl", "__version__"),
    "octbench.hookspecs": ("hookspec", "hookimpl"),
    "octbench.kinds": ("Kind", "REGISTRY", "kinds", "hook_name", "hook_kinds", "variant_lists", "bases"),
    "octbench.technique": (
        "Technique",
        "Splits",
        "Dataset",
        "Preprocessor",
        "Resampler",
        "Augmenter",
        "Model",
        "Regularizer",
        "Optimizer",
        "Metric",
        "ReportSection",
        "Executor",
        "RunContext",
    ),
    "octbench.params": ("Params", "StrictModel"),
    "octbench.errors": ("OctbenchError", "SuiteError", "PluginError", "DataError"),
    "octbench.testing": (
        "parametrize_with_checks",
        "check_technique",
        "checks_for",
        "ConformanceError",
        "ConformanceSkip",
        "COMMON",
    ),
    "octbench.pytest_plugin": ("octbench_tiny_data", "octbench_suite", "octbench_register", "octbench_run"),
    # an executor's (``octbench.technique.Executor``)
    "octbench.cell": ("execute_stack", "failed_result", "CellTask", "CellResult"),
    "octbench.dataset": ("provide_data", "provide_datasets"),
    # a report section's (``octbench.technique.ReportSection``)
    "octbench.report.collect": ("Results", "VariantResults"),
    "octbench.report.analysis": ("Analysis", "VariantAnalysis"),
    "octbench.report.section": ("Section", "Page"),
}
