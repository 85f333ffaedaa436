"""The report's opening paragraph: what the verdicts say, in plain words, generated from the analysis.

Every sentence restates a number the report shows elsewhere (the verdict tables); nothing here computes a new
statistic. Where no verdict could be reached the text says what this design could detect, so "no significant
difference" is never read as "no effect".
"""

from __future__ import annotations

from octbench.report.analysis import ALPHA, Analysis, VariantAnalysis
from octbench.report.collect import Results
from octbench.report.wording import p_text


def _names(items: list[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def design(results: Results, analysis: Analysis) -> str:
    """'5-fold CV × 3 seeds (15 fold models per variant)'."""
    seeds = analysis.seeds
    return (
        f"{analysis.folds}-fold cross-validation × {seeds} seed{'s' if seeds != 1 else ''} "
        f"({analysis.folds * seeds} fold models per variant)"
    )


def _cv_sentence(analysis: Analysis, others: list[VariantAnalysis]) -> list[str]:
    metric = analysis.metric.replace("_", " ")
    compared = [(a, a.comparisons[analysis.metric]) for a in others if analysis.metric in a.comparisons]
    if not compared:
        return []
    differ = [
        f"{a.variant.key} ({c.test.mean_difference:+.3f}, 95% CI [{c.test.low:+.3f}, {c.test.high:+.3f}], "
        f"Holm p {p_text(c.p_holm)})"
        for a, c in compared
        if c.mark
    ]
    same = [a.variant.key for a, c in compared if not c.mark]
    equivalent = [a.variant.key for a, c in compared if not c.mark and c.bayes.p_equivalent >= 0.95]
    text = []
    if differ:
        text.append(
            f"On cross-validation, {_names(differ)} differ{'s' if len(differ) == 1 else ''} from the reference "
            f"in {metric} (corrected resampled t-test, Holm-adjusted p < {ALPHA})."
        )
    else:
        text.append(
            f"On cross-validation, no variant differs from the reference in {metric} at Holm-adjusted p < {ALPHA} "
            "(corrected resampled t-test)."
        )
    if same:
        detectable = sorted((c.detectable, a.variant.key) for a, c in compared if not c.mark and c.detectable)
        if detectable:
            (low, first), (high, last) = detectable[0], detectable[-1]
            span = f"{low:.3f}" if abs(high - low) < 0.0005 else f"{low:.3f} ({first}) to {high:.3f} ({last})"
            text.append(
                f"For {_names(same)} no difference was detected; this design finds a true difference of about "
                f"{span} in {metric} 80% of the time at the Holm-adjusted level the verdicts use, so smaller "
                "effects remain possible"
                + (
                    f", and only {_names(equivalent)} {'is' if len(equivalent) == 1 else 'are'} shown practically "
                    f"equivalent (P(within ±{analysis.options.rope:g}) ≥ 95%)."
                    if equivalent
                    else "."
                )
            )
    return text


def _test_sentence(analysis: Analysis, others: list[VariantAnalysis]) -> list[str]:
    compared = [(a, a.test_split.versus) for a in others if a.test_split is not None and a.test_split.versus]
    if not compared:
        return []
    differ = []
    for a, vs in compared:
        parts = []
        if vs.accuracy_mark:
            parts.append(f"accuracy {vs.accuracy_delta:+.3f} (McNemar Holm p {p_text(vs.mcnemar_holm)})")
        if vs.auc_mark:
            parts.append(f"AUC {vs.auc_delta:+.3f} ({vs.auc_method} Holm p {p_text(vs.auc_holm)})")
        if parts:
            differ.append(f"{a.variant.key} ({'; '.join(parts)})")
    ensembles = _ensembles(analysis)
    if differ:
        return [
            f"On the official test split ({ensembles}, paired image by image), {_names(differ)} "
            f"differ{'s' if len(differ) == 1 else ''} from the reference."
        ]
    return [
        f"On the official test split ({ensembles}, paired image by image), no variant differs from the reference in "
        f"accuracy (McNemar) or AUC at Holm-adjusted p < {ALPHA}."
    ]


def _ensembles(analysis: Analysis) -> str:
    """'ensembles of 5 fold models', or which ensembles hold another number (failed cells) where they differ."""
    odd = analysis.odd_ensembles()
    usual = next(a.test_split.models for a in analysis.variants if a.test_split and a.variant.key not in odd)
    if not odd:
        return f"ensembles of {usual} fold models"
    listed = _names([f"{key}'s of {models}" for key, models in odd.items()])
    return (
        f"ensembles of {usual} fold models, but {listed} (failed cells): a difference there mixes the technique with "
        "the ensemble's size"
    )


def _best(results: Results, analysis: Analysis) -> list[str]:
    metric = analysis.metric
    scored = [
        (a.summaries["heldout"][metric].mean, a.variant.key)
        for a in analysis.variants
        if a.summaries["heldout"][metric].mean is not None
    ]
    if len(scored) < 2:
        return []
    higher = analysis.higher_is_better.get(metric, True)
    value, key = max(scored) if higher else min(scored)
    text = f"The highest mean CV {metric.replace('_', ' ')} is {key}'s ({value:.3f})"
    tested = [(a.test_split.accuracy, a.variant.key) for a in analysis.variants if a.test_split is not None]
    if len(tested) >= 2:
        accuracy, best_test = max(tested)
        text += f"; the highest test-split accuracy is {best_test}'s ({accuracy:.3f})"
    return [text + "."]


def summary(results: Results, analysis: Analysis, more: list[str] | tuple[str, ...] = ()) -> str:
    """One paragraph: the design and reference, the CV and test verdicts, the best variants, what is missing; then
    ``more`` (the other sections' sentences: tuning, the near-duplicate audit, plugins'), before a --quick run's
    warning."""
    done = sum(len(v.cells) for v in results.variants)
    planned = sum(v.planned for v in results.variants)
    text = [
        f"{len(results.variants)} variant{'s' if len(results.variants) != 1 else ''} of "
        f"{results.dataset['name']}, compared by {design(results, analysis)}"
        + (f"; reference: {analysis.reference.key}." if analysis.reference is not None else "; no reference variant.")
    ]
    if done < planned:
        text.append(f"Only {done} of {planned} cells are done, so the verdicts below rest on those.")
    if analysis.reference is not None:
        others = [a for a in analysis.variants if a.variant is not analysis.reference]
        text += _cv_sentence(analysis, others)
        text += _test_sentence(analysis, others)
    text += _best(results, analysis)
    if analysis.agreement is not None and analysis.agreement.disagree:
        text.append("CV and the test split disagree beyond noise (see the note under the leaderboard).")
    text += [m for m in more if m]
    if any(r.row["quick"] for r in results.runs):
        text.append("This was a --quick run: a first look, not results to publish.")
    return " ".join(text)
