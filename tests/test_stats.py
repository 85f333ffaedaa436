"""Statistics against independent computations (scipy directly, closed forms, textbook values)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from octbench import stats


def test_summary_matches_scipy_t_interval():
    values = [0.81, 0.79, 0.84, 0.80, 0.83]
    s = stats.summary(values)
    low, high = sps.t.interval(0.95, 4, loc=np.mean(values), scale=sps.sem(values))
    assert (s.mean, s.std, s.n) == (pytest.approx(np.mean(values)), pytest.approx(np.std(values, ddof=1)), 5)
    assert (s.low, s.high) == (pytest.approx(low), pytest.approx(high))
    assert stats.summary([None, float("nan")]).mean is None


def test_corrected_ttest_by_hand_and_reduces_to_the_plain_t_test():
    d = np.array([0.02, 0.035, 0.01, 0.028, 0.015])
    ratio = 1 / 4  # 5-fold CV: n_test / n_train
    result = stats.corrected_ttest(d, ratio)
    t = d.mean() / math.sqrt((1 / 5 + ratio) * d.var(ddof=1))
    assert result.statistic == pytest.approx(t)
    assert result.p_value == pytest.approx(2 * sps.t.sf(abs(t), 4))
    half = sps.t.ppf(0.975, 4) * math.sqrt((1 / 5 + ratio) * d.var(ddof=1))
    assert (result.low, result.high) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))
    plain = stats.corrected_ttest(d, 0.0)
    reference = sps.ttest_1samp(d, 0.0)
    assert plain.statistic == pytest.approx(reference.statistic) and plain.p_value == pytest.approx(reference.pvalue)
    assert result.p_value > plain.p_value, "the correction makes the test more conservative"


def test_wilcoxon_matches_scipy():
    d = [0.02, -0.01, 0.03, 0.025, 0.04, 0.015, -0.005]
    assert stats.wilcoxon(d) == pytest.approx(sps.wilcoxon(d).pvalue)
    assert stats.wilcoxon([0, 0, 0]) == 1.0


def test_holm_textbook_example():
    # p = (0.01, 0.04, 0.03, 0.005): sorted 0.005*4, 0.01*3, 0.03*2, 0.04*1 -> 0.02, 0.03, 0.06, max(0.06, 0.04)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_mcnemar_exact_binomial_by_hand():
    first = np.array([1] * 50 + [1] * 8 + [0] * 2 + [0] * 40, dtype=bool)
    second = np.array([1] * 50 + [0] * 8 + [1] * 2 + [0] * 40, dtype=bool)
    result = stats.mcnemar(first, second)
    assert (result.only_first_correct, result.only_second_correct) == (8, 2)
    by_hand = 2 * sum(math.comb(10, i) for i in range(0, 3)) / 2**10
    assert result.p_value == pytest.approx(by_hand)


def test_bootstrap_interval_brackets_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    scores = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1)
    probs = np.column_stack([1 - scores, scores])
    low, high = stats.bootstrap_ci(stats.weighted_macro_auc, y, probs, resamples=500, seed=1)
    assert low < roc_auc_score(y, scores) < high
    assert (low, high) == stats.bootstrap_ci(stats.weighted_macro_auc, y, probs, resamples=500, seed=1)


def test_bootstrap_equals_scoring_each_resample_of_images():
    """The weighted form gives the same interval as drawing images with replacement and scoring each resample."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 120)
    probs = rng.dirichlet(np.ones(3), 120)
    probs[60:] = probs[:60]  # ties
    drawn = np.random.default_rng(7).integers(0, 120, (200, 120))  # the draws bootstrap_ci makes with seed 7
    by_loop = {
        "acc": [np.mean(probs[i].argmax(1) == y[i]) for i in drawn],
        "auc": [roc_auc_score(y[i], probs[i], multi_class="ovr") for i in drawn],
    }
    for name, metric in (("acc", stats.weighted_accuracy), ("auc", stats.weighted_macro_auc)):
        expected = np.percentile(by_loop[name], [2.5, 97.5])
        assert stats.bootstrap_ci(metric, y, probs, resamples=200, seed=7) == pytest.approx(tuple(expected))


def test_weighted_auc_matches_scikit_learn_sample_weight_and_marks_a_missing_class():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 150)
    probs = rng.dirichlet(np.ones(4), 150)
    weights = rng.integers(0, 4, (3, 150)).astype(float)
    expected = [roc_auc_score(y, probs, multi_class="ovr", sample_weight=w) for w in weights]
    assert stats.weighted_macro_auc(y, probs, weights) == pytest.approx(expected)
    no_class_3 = weights[:1] * (y != 3)
    assert np.isnan(stats.weighted_macro_auc(y, probs, no_class_3)[0])


@pytest.mark.parametrize("classes", [2, 4])
def test_rank_auc_matches_scikit_learn(classes):
    rng = np.random.default_rng(classes)
    y = rng.integers(0, classes, 200)
    probs = rng.dirichlet(np.ones(classes), 200)
    probs[np.arange(200), y] += 0.2
    probs = probs / probs.sum(1, keepdims=True)
    probs[100:] = probs[:100]  # tied scores with different labels
    expected = roc_auc_score(y, probs[:, 1]) if classes == 2 else roc_auc_score(y, probs, multi_class="ovr")
    assert stats.macro_auc(y, probs) == pytest.approx(expected)


def test_friedman_matches_scipy_and_nemenyi_matches_demsar_table():
    scores = np.array(
        [[0.80, 0.82, 0.79], [0.78, 0.81, 0.77], [0.83, 0.85, 0.80], [0.79, 0.80, 0.78], [0.81, 0.84, 0.80]]
    )
    result = stats.friedman(scores)
    reference = sps.friedmanchisquare(*scores.T)
    assert result.statistic == pytest.approx(reference.statistic) and result.p_value == pytest.approx(reference.pvalue)
    assert result.average_ranks == pytest.approx([2.0, 1.0, 3.0])
    # Demšar (2006), Table 5(a): q_0.05 = 2.343 (k=3), 2.569 (k=4), 2.728 (k=5)
    for k, q in ((3, 2.343), (4, 2.569), (5, 2.728)):
        assert stats.nemenyi_cd(k, 10) == pytest.approx(q * math.sqrt(k * (k + 1) / 60), abs=2e-3)
