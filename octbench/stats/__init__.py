"""Statistics for comparing variants, computed from stored results (scipy). Which test answers what:

- ``cv``: the (seed, fold) cells of one dataset, which share training images: summaries with the corrected
  interval, the corrected resampled t-test (Nadeau & Bengio 2003), the Bayesian correlated t-test with a region
  of practical equivalence (Benavoli et al. 2017), the smallest detectable difference, Holm's adjustment.
- ``paired``: the official test split, where classifiers are paired image by image: McNemar (accuracy at the
  threshold), DeLong (AUC, threshold-free), the paired percentile bootstrap.
- ``clinical``: sensitivity, specificity, PPV and NPV with Wilson intervals; Brier score, calibration error and
  reliability bins; class prevalence.
- ``ranks``: Friedman / Iman-Davenport, Holm against a control and the Nemenyi critical difference, over several
  *datasets* only (Demšar 2006).
"""

from octbench.stats.clinical import Proportion, Rates, Reliability, brier, prevalence, rates, reliability, wilson
from octbench.stats.cv import (
    Bayes,
    PairedTest,
    Summary,
    bayesian_correlated_ttest,
    corrected_ttest,
    detectable_difference,
    holm,
    seeds_to_detect,
    summary,
)
from octbench.stats.level import ALPHA
from octbench.stats.paired import (
    DeLong,
    McNemar,
    auc_classes,
    bootstrap_ci,
    bootstrap_p,
    bootstrap_values,
    delong,
    macro_auc,
    mcnemar,
    percentile_interval,
    weighted_accuracy,
    weighted_macro_auc,
)
from octbench.stats.ranks import Friedman, RankComparison, friedman, holm_against_control, nemenyi_cd, wilcoxon

__all__ = [
    "ALPHA",
    "Bayes",
    "DeLong",
    "Friedman",
    "McNemar",
    "PairedTest",
    "Proportion",
    "RankComparison",
    "Rates",
    "Reliability",
    "Summary",
    "auc_classes",
    "bayesian_correlated_ttest",
    "bootstrap_ci",
    "bootstrap_p",
    "bootstrap_values",
    "brier",
    "corrected_ttest",
    "delong",
    "detectable_difference",
    "friedman",
    "holm",
    "holm_against_control",
    "macro_auc",
    "mcnemar",
    "nemenyi_cd",
    "percentile_interval",
    "prevalence",
    "rates",
    "reliability",
    "seeds_to_detect",
    "summary",
    "weighted_accuracy",
    "weighted_macro_auc",
    "wilcoxon",
    "wilson",
]
