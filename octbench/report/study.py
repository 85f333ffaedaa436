"""A study over several datasets: one block per dataset, variants matched by name (Demšar 2006).

Within a dataset the verdicts are each folder's own (corrected t-test on its CV cells). Across datasets, each
dataset's mean CV score is one observation per variant, so blocks really are independent and the rank tests
apply: Friedman with Iman and Davenport's F, Holm-adjusted comparisons of every variant's average rank with the
reference's, and the critical-difference diagram (Nemenyi). Two variants get a Wilcoxon signed-rank test over
the datasets instead.
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
                found.friedman.average_ranks, everywhere.index(reference_name), len(blocks)
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
                "chi2": found.friedman.statistic,
                "p": found.friedman.p_value,
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
            cells += [f"{row['average_rank']:.2f}", "–" if p is None else f"{p:.3f}"]
        lines.append("| " + " | ".join(export.md_cell(c) for c in cells) + " |")
    note = "\nEach dataset is one block; mean ± SD over its CV cells. ▲/▼: the dataset's own corrected t-test."
    if found.friedman is not None:
        f = found.friedman
        note += (
            f" Friedman over {f.blocks} datasets: Iman-Davenport F = {f.iman_davenport:.2f}, "
            f"p = {f.p_iman_davenport:.3f}; average ranks against the reference, Holm-adjusted."
        )
    return "\n".join(lines) + "\n" + note + "\n"
