"""`octbench report --format latex`: a booktabs table a paper can take unchanged, as a document pdflatex compiles.

The table: one row per variant, CV metrics as mean ± SD over the fold models, the test split's ensemble accuracy
and AUC, the best value of each column in bold, † where the Holm-adjusted test against the reference rejects
equality (CV: corrected resampled t-test; test split: McNemar for accuracy, DeLong or a paired bootstrap for AUC).
The caption says the dataset, the folds × seeds and the tests. Copy the ``table`` environment into a paper; it
needs ``\\usepackage{booktabs}``.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from octbench.report import leaderboard
from octbench.report.analysis import Analysis
from octbench.report.collect import Results
from octbench.report.figures import slug
from octbench.report.leaderboard import COLUMNS, Row
from octbench.report.summary import design
from octbench.stats import ALPHA

SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}


def escape(text: str) -> str:
    """Plain text for LaTeX: specials escaped; characters pdflatex's default fonts lack folded to ASCII ('é' → 'e'),
    or written as '?' when they have no ASCII form."""
    folded = []
    for ch in str(text):
        if ord(ch) < 128:
            folded.append(ch)
            continue
        ascii_form = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
        folded.append(ascii_form or "?")
    text = "".join(SPECIAL.get(ch, ch) for ch in "".join(folded))
    return "{}" + text if text.startswith("[") else text  # after a row's \\, '[' would open an optional argument


def _cell(text: str, best: bool, significant: bool) -> str:
    body = rf"\textbf{{{text}}}" if best else text
    return body + (r"\textsuperscript{\dag}" if significant else "")


def table(results: Results, analysis: Analysis, board: list[Row]) -> str:
    """The leaderboard's ``table`` environment."""
    has_test = results.has_test
    best = leaderboard.best(board, analysis)
    header = [r"Variant"] + [rf"{escape(label)}" for _, label in COLUMNS]
    if has_test:
        header += ["Test accuracy", "Test AUC" if len(results.class_names) == 2 else "Test macro AUC"]
    lines = []
    for row in board:
        cells = [escape(row.key) + (r" (ref.)" if row.reference else "") + (r" \ddag" * bool(row.budget_note))]
        for metric, _ in COLUMNS:
            s, c = row.cv[metric], row.verdicts.get(metric)
            text = "--" if s.mean is None else rf"{s.mean:.3f} $\pm$ {s.std:.3f}"
            cells.append(_cell(text, row.key in best.get(f"heldout_{metric}_mean", ()), _significant(c and c.p_holm)))
        if has_test:
            t, vs = row.test, row.versus
            for key, value, p in (
                ("test_ensemble_accuracy", t and t.accuracy, vs and vs.mcnemar_holm),
                ("test_ensemble_auc", t and t.auc, vs and vs.auc_holm),
            ):
                text = "--" if value is None else f"{value:.3f}"
                cells.append(_cell(text, row.key in best.get(key, ()), _significant(p)))
        lines.append(" & ".join(cells) + r" \\")
    return _environment(header, lines, caption(results, analysis, board), "tab:octbench")


def _significant(p: float | None) -> bool:
    return p is not None and p < ALPHA


def rows_table(rows: list[dict[str, Any]], title: str) -> str:
    """A section's table of ``rows`` (a plugin's, say) as a ``table`` environment, numbers to 3 significant digits."""
    fields = list(dict.fromkeys(key for row in rows for key in row))

    def shown(value: Any) -> str:
        return "--" if value is None else escape(f"{value:.3g}" if isinstance(value, float) else str(value))

    lines = [" & ".join(shown(row.get(k)) for k in fields) + r" \\" for row in rows]
    return _environment([escape(f) for f in fields], lines, escape(title), f"tab:{slug(title)}")


def _environment(header: list[str], lines: list[str], caption_text: str, label: str) -> str:
    spec = "l" + "r" * (len(header) - 1)
    return "\n".join(
        [
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            r"\setlength{\tabcolsep}{4pt}",
            rf"\caption{{{caption_text}}}",
            rf"\label{{{label}}}",
            r"\resizebox{\linewidth}{!}{%",
            rf"\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            " & ".join(header) + r" \\",
            r"\midrule",
            *lines,
            r"\bottomrule",
            r"\end{tabular}}",
            r"\end{table}",
        ]
    )


def caption(results: Results, analysis: Analysis, board: list[Row]) -> str:
    """The caption, as LaTeX: dataset, folds × seeds, what each column is and which tests the daggers rest on."""
    dataset = results.dataset
    size = dataset.get("image_size")
    shape = rf" ({size}$\times${size})" if size else ""
    text = (
        f"{escape(dataset['name'])}{shape}: "
        f"{escape(design(results, analysis).replace(' × ', ' x '))}. "
        r"CV columns: mean $\pm$ SD of the fold models on their held-out folds."
    )
    if results.has_test:
        text += " Test columns: the ensemble of each variant's fold models on the official test split."
    text += " Bold: best in the column."
    if analysis.reference is not None:
        tests = "CV: corrected resampled t-test (Nadeau and Bengio, 2003)"
        if results.has_test:
            auc = "DeLong" if len(results.class_names) == 2 else "a paired bootstrap of the macro AUC"
            tests += f"; test split: McNemar for accuracy, {auc} for AUC"
        text += (
            rf" \dag: differs from {escape(analysis.reference.key)} at Holm-adjusted $p < {ALPHA}$ over the variants "
            f"({tests})."
        )
        if any(row.budget_note for row in board):
            text += rf" \ddag: {escape(leaderboard.unequal_budget_legend(board))}"
    return text


def document(results: Results, analysis: Analysis, tables: list[str]) -> str:
    """A complete document around the sections' ``tables`` (the leaderboard's first), so the file compiles as it is."""
    return "\n".join(
        [
            "% Made by octbench. Paste the table environment into a paper; it needs \\usepackage{booktabs} and",
            "% \\usepackage{graphicx} (for \\resizebox).",
            r"\documentclass{article}",
            r"\usepackage[T1]{fontenc}",
            r"\usepackage{booktabs}",
            r"\usepackage{graphicx}",
            r"\begin{document}",
            *tables,
            r"\end{document}",
            "",
        ]
    )
