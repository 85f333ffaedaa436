"""`octbench report`: load one or more results folders, analyse, write the chosen format.

Folders of one dataset merge into one comparison; folders of different datasets make a study over datasets,
where each dataset is one block of the rank tests (``octbench.report.study``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from octbench.errors import OctbenchError
from octbench.report import export, render, study
from octbench.report.analysis import Options, analyse
from octbench.report.collect import dataset_identity, latest_run, load
from octbench.report.figures import Drawer, forget_old_figures

EXTENSIONS = {"html": ".html", "md": ".md", "json": ".json", "latex": ".tex"}


def publish(
    directories: list[str | Path],
    *,
    fmt: str = "html",
    output: str | None = None,
    metric: str | None = None,
    rope: float | None = None,
    positive_class: str | None = None,
    figures: str | Path | None = None,
) -> list[Path]:
    """Write the report; ``output='-'`` prints Markdown, JSON or LaTeX to standard output instead (returns no
    paths). ``metric``, ``rope`` and ``positive_class`` override the first folder's suite settings; ``figures``
    names a folder that receives every figure as SVG, PDF and 300-dpi PNG. ``fmt='predictions'`` writes every
    stored per-image prediction as CSV."""
    suite = latest_run(Path(directories[0]))["suite"]
    options = Options.of_suite(suite, metric=metric, rope=rope, positive_class=positive_class)
    if len({dataset_identity(Path(d)) for d in directories}) > 1:
        if fmt in ("latex", "predictions") or figures:
            raise OctbenchError(
                "these folders hold different datasets, which make a study over datasets: it has html, md, csv and "
                "json. --format latex, --format predictions and --figures report one dataset's folders."
            )
        return _write({fmt: study.render(directories, options, fmt)}, fmt, directories, "study", output)
    results = load(directories)
    analysis = analyse(results, options)
    stem = "report" if len(directories) == 1 else "comparison"
    drawer = Drawer(analysis, Path(figures)) if figures else None
    page = render.page_of(results, analysis, drawer)
    if drawer is not None and fmt != "html":  # the page draws them itself
        render.draw(page)
    if fmt == "csv":
        written = render.write_csv(page, Path(output) if output else Path(directories[0]))
    elif fmt == "predictions":
        written = export.write_predictions(
            results, Path(output) if output else Path(directories[0]) / "predictions.csv"
        )
    else:
        formats = {"html": render.html, "md": render.markdown, "json": render.to_json, "latex": render.to_latex}
        written = _write({fmt: formats[fmt](page)}, fmt, directories, stem, output)
    forget_old_figures()
    return written + (drawer.written if drawer is not None else [])


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
