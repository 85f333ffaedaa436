"""`octbench report`: load one or more results folders, analyse, write the chosen format."""

from __future__ import annotations

import sys
from pathlib import Path

from octbench.data.files import write_atomically
from octbench.report import export
from octbench.report.analysis import analyse
from octbench.report.collect import load
from octbench.report.render import render_html

EXTENSIONS = {"html": ".html", "md": ".md", "json": ".json"}


def publish(
    directories: list[str | Path], *, fmt: str = "html", metric: str = "accuracy", output: str | None = None
) -> list[Path]:
    """Write the report; ``output='-'`` prints Markdown or JSON to standard output instead (returns no paths)."""
    results = load(directories)
    analysis = analyse(results, metric)
    stem = "report" if len(directories) == 1 else "comparison"
    if fmt == "csv":
        return export.write_csv(results, analysis, Path(output) if output else Path(directories[0]))
    text = {"html": render_html, "md": export.markdown, "json": export.to_json}[fmt](results, analysis)
    if output == "-":
        sys.stdout.write(text)
        return []
    path = Path(output) if output else Path(directories[0]) / f"{stem}{EXTENSIONS[fmt]}"
    write_atomically(path, text.encode("utf-8"))
    return [path]
