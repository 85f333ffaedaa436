"""`octbench report`: load one or more results folders, analyse, write the chosen format.

Folders of one dataset merge into one comparison; folders of different datasets make a study over datasets,
where each dataset is one block of the rank tests (``octbench.report.study``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from octbench.report import export, study
from octbench.report.analysis import Options, analyse
from octbench.report.collect import dataset_identity, latest_run, load
from octbench.report.render import render_html

EXTENSIONS = {"html": ".html", "md": ".md", "json": ".json"}


def publish(
    directories: list[str | Path],
    *,
    fmt: str = "html",
    output: str | None = None,
    metric: str | None = None,
    rope: float | None = None,
    positive_class: str | None = None,
) -> list[Path]:
    """Write the report; ``output='-'`` prints Markdown or JSON to standard output instead (returns no paths).
    ``metric``, ``rope`` and ``positive_class`` override the first folder's suite settings."""
    suite = latest_run(Path(directories[0]))["suite"]
    options = Options.of_suite(suite, metric=metric, rope=rope, positive_class=positive_class)
    if len({dataset_identity(Path(d)) for d in directories}) > 1:
        return _write({fmt: study.render(directories, options, fmt)}, fmt, directories, "study", output)
    results = load(directories)
    analysis = analyse(results, options)
    stem = "report" if len(directories) == 1 else "comparison"
    if fmt == "csv":
        return export.write_csv(results, analysis, Path(output) if output else Path(directories[0]))
    text = {"html": render_html, "md": export.markdown, "json": export.to_json}[fmt](results, analysis)
    return _write({fmt: text}, fmt, directories, stem, output)


def _write(texts: dict[str, str], fmt: str, directories: list[str | Path], stem: str, output: str | None) -> list[Path]:
    if output == "-":
        sys.stdout.write(texts[fmt])
        return []
    if fmt == "csv":
        path = (Path(output) if output else Path(directories[0])) / f"{stem}.csv"
    else:
        path = Path(output) if output else Path(directories[0]) / f"{stem}{EXTENSIONS[fmt]}"
    export.written(path, texts[fmt].encode("utf-8"))
    return [path]
