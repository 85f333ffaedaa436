"""What the exports share: Markdown and CSV cells made safe, atomic writes, every cell's row, and the leaderboard's
and verdicts' Markdown tables (the sections give them; ``octbench.report.render`` assembles each format)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

from octbench.data.files import write_atomically
from octbench.errors import OctbenchError
from octbench.report import leaderboard
from octbench.report.analysis import Analysis
from octbench.report.collect import Results
from octbench.report.leaderboard import COLUMNS, UNEQUAL, Row
from octbench.report.summary import design
from octbench.report.wording import p_text
from octbench.stats import ALPHA


def cell_rows(results: Results) -> list[dict[str, Any]]:
    """A row per cell and split; a tuned run adds the setting each cell's search chose (``tuned <key>``)."""
    names = results.metric_names
    searched = sorted(
        {k for v in results.variants for c in v.cells for k in c.settings.get("search", {}).get("chosen", {})}
    )
    rows = []
    for v in results.variants:
        for c in v.cells:
            for split, metrics in sorted(c.metrics.items()):
                rows.append(
                    {
                        "variant": v.key,
                        "run": v.run,
                        "seed": c.seed,
                        "fold": c.fold,
                        "split": split,
                        **{m: metrics.get(m) for m in names},
                        **{f"seconds_{k}": c.timings.get(k) for k in ("preprocess", "resample", "train", "evaluate")},
                        "train_images_per_s": c.timings.get("train_images_per_s"),
                        **{f"tuned {k}": c.settings.get("search", {}).get("chosen", {}).get(k) for k in searched},
                    }
                )
    return rows


def _pm(mean: float | None, std: float | None) -> str:
    return "–" if mean is None else f"{mean:.3f} ± {std:.3f}"


def _significant(p: float | None) -> str:
    return " †" if p is not None and p < ALPHA else ""


def _bold(text: str, best: bool) -> str:
    return f"**{text}**" if best and text != "–" else text


def _raw_holm(p: float | None, holm: float | None) -> str:
    return "–" if p is None else f"{p_text(p)} ({p_text(holm)})"


def leaderboard_markdown(results: Results, analysis: Analysis, board: list[Row]) -> str:
    """The leaderboard (every CV metric, the test ensembles with intervals, best in bold, † where the Holm-adjusted
    test against the reference rejects equality) and its caption."""
    has_test = results.has_test
    reference = analysis.reference is not None
    best = leaderboard.best(board, analysis)
    odd = analysis.odd_ensembles()
    header = ["Variant", *[f"CV {label}" for _, label in COLUMNS]]
    if has_test:
        header += ["Test accuracy (ensemble) [95% CI]", "Test AUC (ensemble) [95% CI]"]
    header += ["Changes vs reference"] if reference else []
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for row in board:
        cells = [row.key + (" (reference)" if row.reference else "") + f" {UNEQUAL}" * bool(row.budget_note)]
        for m, _ in COLUMNS:
            s, c = row.cv[m], row.verdicts.get(m)
            text = _bold(_pm(s.mean, s.std), row.key in best.get(f"heldout_{m}_mean", ()))
            cells.append(text + _significant(c.p_holm if c else None))
        if has_test:
            t, vs = row.test, row.versus
            for key, value, interval, p in (
                ("test_ensemble_accuracy", t and t.accuracy, t and t.accuracy_ci, vs and vs.mcnemar_holm),
                ("test_ensemble_auc", t and t.auc, t and t.auc_ci, vs and vs.auc_holm),
            ):
                text = _bold(_value(value), row.key in best.get(key, ()))
                shown = "" if not interval or interval[0] is None else f" [{interval[0]:.3f}, {interval[1]:.3f}]"
                size = f" ({odd[row.key]} fold models)" if row.key in odd else ""
                cells.append(text + shown + size + _significant(p))
        if reference:
            cells.append("reference" if row.reference else ("; ".join(row.changes) or "none"))
        lines.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n\n" + _caption(results, analysis, board) + "\n"


def verdicts_markdown(board: list[Row], analysis: Analysis, has_test: bool) -> str:
    """Each variant against the reference: the CV verdict on the compared metric, and the test split's."""
    header = [
        "Variant",
        f"CV Δ {analysis.metric.replace('_', ' ')} [corrected 95% CI]",
        "corrected t p raw (Holm)",
        "P(worse/≈/better)",
        "detectable Δ",
    ]
    if has_test:
        header += [
            "test Δ accuracy [CI]",
            "McNemar only this / only ref.",
            "McNemar p raw (Holm)",
            "test Δ AUC [CI]",
            "AUC p raw (Holm)",
        ]
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for row in board:
        if row.reference:
            continue
        c = row.verdicts.get(analysis.metric)
        cells = [row.key]
        if c is None:
            cells += ["–"] * 4
        else:
            cells += [
                f"{c.test.mean_difference:+.3f} {_interval(c.test.low, c.test.high)}",
                _raw_holm(c.test.p_value, c.p_holm),
                " / ".join(f"{100 * p:.0f}%" for p in (c.bayes.p_worse, c.bayes.p_equivalent, c.bayes.p_better)),
                "–" if c.detectable is None else f"±{c.detectable:.3f}",
            ]
        vs = row.versus
        if has_test and vs is None:
            cells += ["–"] * 5
        elif has_test:
            cells += [
                f"{vs.accuracy_delta:+.3f} {_interval(*vs.accuracy_ci)}",
                f"{vs.mcnemar.only_first_correct} / {vs.mcnemar.only_second_correct}",
                _raw_holm(vs.mcnemar.p_value, vs.mcnemar_holm),
                "–" if vs.auc_delta is None else f"{vs.auc_delta:+.3f} {_interval(*vs.auc_ci)}",
                "–" if vs.auc_p is None else f"{_raw_holm(vs.auc_p, vs.auc_holm)} {vs.auc_method}",
            ]
        lines.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _interval(low: float, high: float) -> str:
    return f"[{low:+.3f}, {high:+.3f}]"


def _caption(results: Results, analysis: Analysis, board: list[Row]) -> str:
    dataset = results.dataset
    has_test = results.has_test
    reference = analysis.reference.key if analysis.reference else None
    text = (
        f"{dataset['name']}, {design(results, analysis)}. CV: mean ± SD of the fold models on their held-out folds"
        + ("; test: the fold models' ensemble on the official test split, bootstrap 95% CI" if has_test else "")
        + ". Bold: best in the column."
    )
    if reference:
        text += (
            f" †: differs from {reference} at Holm-adjusted p < {ALPHA} (CV: corrected resampled t-test, Nadeau & "
            "Bengio, on paired folds"
            + ("; test: McNemar for accuracy, DeLong or a paired bootstrap for AUC" if has_test else "")
            + "; Holm adjusts over the variants compared with the reference, separately in each column"
            + f"). P(worse/≈/better): Bayesian correlated t-test, ROPE ±{analysis.options.rope:g}."
        )
    if any(row.budget_note for row in board):
        text += f" {UNEQUAL}: {leaderboard.unequal_budget_legend(board)}"
    if any(r.row["quick"] for r in results.runs):
        text += " Made with `--quick`: a first look, not results to publish."
    return md_cell(text)


def _value(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


_OPENS_HTML = re.compile(r"<(?=[A-Za-z/!?])|&(?=#?\w+;)")


def md_cell(text: str) -> str:
    """A Markdown table cell, one line: pipes escaped, and HTML in names shown as text. Only a ``<`` that could open
    a tag and an ``&`` that could start an entity are written as entities (every Markdown renderer honours those;
    Python-Markdown ignores a backslash before ``<``), so ordinary text such as "p < 0.05" stays as written."""
    escaped = _OPENS_HTML.sub(lambda m: "&lt;" if m.group(0) == "<" else "&amp;", str(text))
    return escaped.replace("|", "\\|").replace("\n", " ")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralised(value: Any) -> Any:
    """Text a spreadsheet would run as a formula (a variant named ``=HYPERLINK(...)``), prefixed with ``'`` (OWASP's
    advice for CSV injection); numbers are left alone."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        fields = list(dict.fromkeys(key for row in rows for key in row))  # every row's columns, first seen first
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: neutralised(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def written(path: Path, data: bytes) -> None:
    """``write_atomically``, with a failure to write (read-only folder, full disk) as a one-line error."""
    try:
        write_atomically(path, data)
    except OSError as exc:
        raise OctbenchError(f"cannot write {path}: {exc.strerror}. Write the report elsewhere with --output.") from None


def write_predictions(results: Results, path: Path) -> list[Path]:
    """Every stored per-image prediction as CSV (``octbench.report.compare.prediction_rows``)."""
    from octbench.report.compare import prediction_rows

    rows = prediction_rows(results)
    if not rows:
        raise OctbenchError(f"no per-image predictions are stored under {path.parent}: nothing to export.")
    written(path, csv_text(rows).encode())
    return [path]


def md_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of ``rows`` (every row's keys, first seen first), numbers to 3 significant digits."""
    if not rows:
        return ""
    fields = list(dict.fromkeys(key for row in rows for key in row))
    shown = [[_plain(row.get(k)) for k in fields] for row in rows]
    lines = ["| " + " | ".join(md_cell(f) for f in fields) + " |", "|" + "---|" * len(fields)]
    return "\n".join(lines + ["| " + " | ".join(md_cell(c) for c in cells) + " |" for cells in shown]) + "\n"


def _plain(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
