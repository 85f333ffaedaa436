"""`octbench report --format latex`: a booktabs table a paper can take unchanged, as a document pdflatex compiles.

The table: one row per variant, CV metrics as mean ± SD over the fold models, the test split's ensemble accuracy
and AUC, the best value of each column in bold, † where the Holm-adjusted test against the reference rejects
equality (CV: corrected resampled t-test; test split: McNemar for accuracy, DeLong or a paired bootstrap for AUC).
The caption says the dataset, the folds × seeds and the tests. Copy the ``table`` environment into a paper; it
needs ``\\usepackage{booktabs}``.
"""

from __future__ import annotations

import unicodedata

from octbench.report import tuned
from octbench.report.analysis import Analysis
from octbench.report.collect import Results
from octbench.report.export import MARKDOWN_COLUMNS, best_keys, unequal_budget_legend
from octbench.report.summary import design

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


def table(results: Results, analysis: Analysis) -> str:
    """The ``table`` environment alone."""
    from octbench.report.export import leaderboard_rows

    rows = leaderboard_rows(results, analysis)
    has_test = results.has_test
    columns = [(f"heldout_{m}_mean", label.replace("CV ", "")) for m, label in MARKDOWN_COLUMNS]
    best = best_keys(rows, analysis)
    header = [r"Variant"] + [rf"{escape(label)}" for _, label in columns]
    if has_test:
        header += ["Test accuracy", "Test AUC" if len(results.class_names) == 2 else "Test macro AUC"]
    lines = []
    for row in rows:
        cells = [
            escape(row["variant"]) + (r" (ref.)" if row["reference"] else "") + (r" \ddag" * (not row["equal_budget"]))
        ]
        for (key, _), (metric, _) in zip(columns, MARKDOWN_COLUMNS, strict=True):
            mean, std = row[key], row[f"heldout_{metric}_std"]
            text = "--" if mean is None else rf"{mean:.3f} $\pm$ {std:.3f}"
            significant = (row.get(f"p_{metric}_corrected_t_holm") or 1.0) < 0.05
            cells.append(_cell(text, row["variant"] in best.get(key, ()), significant))
        if has_test:
            for key, p in (("test_ensemble_accuracy", "p_mcnemar_holm"), ("test_ensemble_auc", "p_auc_holm")):
                value = row[key]
                text = "--" if value is None else f"{value:.3f}"
                cells.append(_cell(text, row["variant"] in best.get(key, ()), (row.get(p) or 1.0) < 0.05))
        lines.append(" & ".join(cells) + r" \\")
    spec = "l" + "r" * (len(header) - 1)
    return "\n".join(
        [
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            r"\setlength{\tabcolsep}{4pt}",
            rf"\caption{{{caption(results, analysis)}}}",
            r"\label{tab:octbench}",
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


def caption(results: Results, analysis: Analysis) -> str:
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
            rf" \dag: differs from {escape(analysis.reference.key)} at Holm-adjusted $p < 0.05$ over the variants "
            f"({tests})."
        )
        if any(tuned.budget_note(a.variant, analysis.reference) for a in analysis.variants):
            text += rf" \ddag: {escape(unequal_budget_legend(analysis))}"
    return text


def document(results: Results, analysis: Analysis) -> str:
    """A complete document around the table, so the file compiles as it is."""
    return "\n".join(
        [
            "% Made by octbench. Paste the table environment into a paper; it needs \\usepackage{booktabs} and",
            "% \\usepackage{graphicx} (for \\resizebox).",
            r"\documentclass{article}",
            r"\usepackage[T1]{fontenc}",
            r"\usepackage{booktabs}",
            r"\usepackage{graphicx}",
            r"\begin{document}",
            table(results, analysis),
            r"\end{document}",
            "",
        ]
    )
