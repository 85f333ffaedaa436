"""A study over several datasets: one block per dataset, variants matched by name (Demšar 2006).

Within a dataset the verdicts are each folder's own (corrected t-test on its CV cells). Across datasets, each
dataset's mean CV score is one observation per variant, so blocks really are independent and the rank tests
apply: Friedman's test (an exact permutation p-value where it can be enumerated, which is what a study of few
datasets needs; ``octbench.stats.ranks``), Holm-adjusted comparisons of every variant's average rank with the
reference's, and the critical-difference diagram (Nemenyi). Two variants get a Wilcoxon signed-rank test over
the datasets instead. Below ``FEW`` datasets the page says what so small a study can and cannot show.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from octbench import stats
from octbench.errors import OctbenchError
from octbench.report import export, plots
from octbench.report.analysis import Analysis, Options, analyse
from octbench.report.collect import Results, dataset_identity, load
from octbench.report.wording import p_text

# autorank refuses fewer than 5 datasets; octbench reports them, saying what they can and cannot show
FEW = 5


@dataclass
class Block:
    label: str
    directory: Path
    results: Results
    analysis: Analysis


@dataclass
class Study:
    options: Options
    blocks: list[Block]
    names: list[str]
    reference: str | None
    scores: np.ndarray
    friedman: stats.Friedman | None = None
    versus: dict[int, stats.RankComparison] = field(default_factory=dict)
    wilcoxon: float | None = None
    dropped: list[str] = field(default_factory=list)

    def test_text(self) -> str:
        """The sentence that says which test of ranks decided, on how many datasets, and its p-value."""
        f = self.friedman
        if f is None:
            return ""
        n = f"{f.blocks} dataset{'s' if f.blocks != 1 else ''}"
        if f.method == "exact":
            how = (
                f"exact permutation p = {p_text(f.p)} over all {f.patterns:,} ways the datasets could rank the variants"
            )
        elif f.method == "permutation":
            how = f"permutation p = {p_text(f.p)} from {f.permutations:,} random rank permutations within datasets"
        else:
            how = (
                f"Iman and Davenport's F = {f.iman_davenport:.2f}, p = {p_text(f.p)} (its approximation holds from "
                f"{stats.ranks.ASYMPTOTIC_FROM} datasets on)"
            )
        return f"Friedman's test of the ranks over {n}: {how}."

    def versus_text(self) -> str:
        """How each variant's rank difference from the reference is tested."""
        if len(self.blocks) < stats.ranks.ASYMPTOTIC_FROM:
            return (
                "the exact permutation test of the rank-sum difference (the normal z-test is too liberal with few "
                "datasets)"
            )
        return "the z-test of the rank difference (Demšar 2006)"

    def small_study_text(self) -> str:
        """What a study of fewer than ``FEW`` datasets can and cannot show (empty for larger ones)."""
        n, k = len(self.blocks), len(self.names)
        if n >= FEW or k < 2:
            return ""
        if self.friedman is not None:
            floor = (
                f"the smallest p-value Friedman's test can give is {self.friedman.smallest_p:.3g} (every dataset "
                "ranking the variants identically)"
            )
        else:
            floor = f"the smallest p-value the Wilcoxon test can give is {2 / 2**n:.3g}"
        return (
            f"A study of {n} dataset{'s' if n != 1 else ''} is small: {floor}, so it can show a difference only "
            "when the datasets agree almost perfectly, and a non-significant result says little. It cannot show "
            "that variants are equivalent, nor how they would rank on other datasets; each dataset's own verdicts "
            f"(its folds) carry most of the evidence. Rank tests are usually reported from {FEW} datasets on."
        )

    def cell(self, block: int, name: str):
        """(CV summary of the compared metric, its verdict mark) of one variant on one dataset."""
        a = next(a for a in self.blocks[block].analysis.variants if a.variant.name == name)
        comparison = a.comparisons.get(self.options.metric)
        return a.summaries["heldout"][self.options.metric], comparison.mark if comparison else ""


def analyse_study(directories: list[str | Path], options: Options) -> Study:
    identities = [dataset_identity(Path(d)) for d in directories]
    repeated = sorted({str(d) for d, i in zip(directories, identities, strict=True) if identities.count(i) > 1})
    if repeated:
        raise OctbenchError(
            f"{', '.join(repeated)} hold the same dataset: a study over datasets takes one folder per dataset. "
            "Report folders of one dataset together on their own (`octbench report DIR1 DIR2`)."
        )
    names_of = [i[0] for i in identities]
    blocks = []
    for directory, (name, _) in zip(directories, identities, strict=True):
        results = load([directory])
        label = name if names_of.count(name) == 1 else f"{name} ({Path(directory).name})"
        blocks.append(Block(label, Path(directory), results, analyse(results, options)))

    def mean(block: Block, variant: str) -> float | None:
        found = [a for a in block.analysis.variants if a.variant.name == variant]
        return found[0].summaries["heldout"][options.metric].mean if found else None

    first = [a.variant.name for a in blocks[0].analysis.variants]
    everywhere = [n for n in first if all(mean(b, n) is not None for b in blocks)]
    dropped = [n for n in {a.variant.name for b in blocks for a in b.analysis.variants} if n not in everywhere]
    scores = np.array([[mean(b, n) for n in everywhere] for b in blocks], dtype=float)
    reference = blocks[0].results.reference
    reference_name = reference.name if reference is not None and reference.name in everywhere else None
    found = Study(options, blocks, everywhere, reference_name, scores, dropped=sorted(dropped))
    k = len(everywhere)
    if k >= 3 and len(blocks) >= 2 and not np.all(scores == scores[:, :1]):
        found.friedman = stats.friedman(scores)
        if reference_name is not None:
            found.versus = stats.holm_against_control(
                found.friedman.average_ranks,
                everywhere.index(reference_name),
                len(blocks),
                ranks=stats.ranks.rank_matrix(scores),
            )
    elif k == 2 and len(blocks) >= 2:
        found.wilcoxon = stats.wilcoxon(scores[:, 1] - scores[:, 0])
    return found


def render(directories: list[str | Path], options: Options, fmt: str) -> str:
    found = analyse_study(directories, options)
    if fmt == "html":
        from octbench.report.render import environment

        figure = None
        if found.friedman is not None:
            figure = plots.to_data_uri(
                plots.critical_difference(found.names, found.friedman.average_ranks, found.friedman.critical_difference)
            )
        return environment().get_template("study.html.j2").render(study=found, cd=figure, title=_title(found))
    rows = rows_of(found)
    if fmt == "json":
        payload = {
            "metric": options.metric,
            "datasets": [b.label for b in found.blocks],
            "reference": found.reference,
            "variants": rows,
            "friedman": None
            if found.friedman is None
            else {
                "p": found.friedman.p,
                "method": found.friedman.method,
                "permutations": found.friedman.permutations,
                "smallest_possible_p": found.friedman.smallest_p,
                "chi2": found.friedman.statistic,
                "p_chi2": found.friedman.p_value,
                "iman_davenport_f": found.friedman.iman_davenport,
                "p_iman_davenport": found.friedman.p_iman_davenport,
                "critical_difference": found.friedman.critical_difference,
            },
            "wilcoxon_p": found.wilcoxon,
            "dropped": found.dropped,
        }
        return json.dumps(payload, indent=1, default=str)
    if fmt == "csv":
        return export.csv_text(rows)
    return _markdown(found, rows)


def rows_of(found: Study) -> list[dict]:
    rows = []
    for j, name in enumerate(found.names):
        row: dict = {"variant": name, "reference": name == found.reference}
        for i, block in enumerate(found.blocks):
            summary, mark = found.cell(i, name)
            row[f"{block.label} mean"], row[f"{block.label} sd"], row[f"{block.label} verdict"] = (
                summary.mean,
                summary.std,
                mark,
            )
        if found.friedman is not None:
            row["average_rank"] = found.friedman.average_ranks[j]
            versus = found.versus.get(j)
            row["p_rank_vs_reference"] = versus.p_value if versus else None
            row["p_rank_vs_reference_holm"] = versus.p_holm if versus else None
        rows.append(row)
    return rows


def _title(found: Study) -> str:
    return "study over " + ", ".join(b.label for b in found.blocks)


def _markdown(found: Study, rows: list[dict]) -> str:
    metric = found.options.metric.replace("_", " ")
    header = ["Variant", *[f"{b.label} CV {metric}" for b in found.blocks]]
    if found.friedman is not None:
        header += ["average rank", "p vs reference (Holm)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["variant"] + (" (reference)" if row["reference"] else "")]
        for b in found.blocks:
            m, sd, mark = row[f"{b.label} mean"], row[f"{b.label} sd"], row[f"{b.label} verdict"]
            cells.append(f"{m:.3f} ± {sd:.3f}" + {"better": " ▲", "worse": " ▼"}.get(mark, ""))
        if found.friedman is not None:
            p = row["p_rank_vs_reference_holm"]
            cells += [f"{row['average_rank']:.2f}", p_text(p)]
        lines.append("| " + " | ".join(export.md_cell(c) for c in cells) + " |")
    note = "\nEach dataset is one block; mean ± SD over its CV cells. ▲/▼: the dataset's own corrected t-test."
    if found.friedman is not None:
        note += f" {found.test_text()} Average ranks against the reference: {found.versus_text()}, Holm-adjusted."
    elif found.wilcoxon is not None:
        note += f" Wilcoxon signed-rank test over the datasets: p = {p_text(found.wilcoxon)}."
    if found.small_study_text():
        note += f"\n\n{found.small_study_text()}"
    return "\n".join(lines) + "\n" + note + "\n"
