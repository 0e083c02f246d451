"""TOST against scipy's one-sided t-tests on shifted data, and the four verdict words."""

from __future__ import annotations

import pytest
from scipy import stats

from loraplace.analysis.equivalence import tost_paired, tost_welch, verdicts_by_seed

A = [3.10, 3.02, 3.15, 3.07, 2.98]
B = [3.12, 3.08, 3.11, 3.13, 3.05]


@pytest.mark.parametrize("margin", [0.01, 0.05, 0.2])
def test_tost_paired_is_two_shifted_one_sided_ttests(margin):
    got = tost_paired(A, B, margin)
    lower = stats.ttest_rel([a + margin for a in A], B, alternative="greater")
    upper = stats.ttest_rel([a - margin for a in A], B, alternative="less")
    assert got.p_lower == pytest.approx(lower.pvalue, rel=1e-12)
    assert got.t_lower == pytest.approx(lower.statistic, rel=1e-12)
    assert got.p_upper == pytest.approx(upper.pvalue, rel=1e-12)
    assert got.t_upper == pytest.approx(upper.statistic, rel=1e-12)
    assert got.p == pytest.approx(max(lower.pvalue, upper.pvalue), rel=1e-12)
    assert got.df == 4


@pytest.mark.parametrize("margin", [0.01, 0.05, 0.2])
def test_tost_welch_is_two_shifted_welch_tests(margin):
    b = B[:3]  # unequal sizes and spreads
    got = tost_welch(A, b, margin)
    lower = stats.ttest_ind([a + margin for a in A], b, equal_var=False, alternative="greater")
    upper = stats.ttest_ind([a - margin for a in A], b, equal_var=False, alternative="less")
    assert got.p_lower == pytest.approx(lower.pvalue, rel=1e-10)
    assert got.p_upper == pytest.approx(upper.pvalue, rel=1e-10)
    assert got.df == pytest.approx(lower.df, rel=1e-12)


def test_tost_needs_two_pairs_and_spread():
    assert tost_paired([1.0], [2.0], 0.1) is None
    assert tost_paired([1.0, 2.0], [1.5, 2.5], 0.1) is None  # identical differences
    assert tost_welch([1.0, 2.0], [1.0], 0.1) is None


def _seeds(values):
    return dict(enumerate(values))


def test_verdict_words():
    by_seed = {
        "attn": _seeds([3.000, 3.010, 2.990, 3.005, 2.995]),
        # attn + 0.0010 +- 0.0005: equivalent within a 0.05 margin (and not better)
        "attn2": _seeds([3.0012, 3.0105, 2.9915, 3.0058, 2.9962]),
        "ffn": _seeds([3.300, 3.320, 3.290, 3.310, 3.305]),  # clearly worse
    }
    got = {(v.a, v.b): v for v in verdicts_by_seed(by_seed, margin=0.05)}
    assert got["attn", "attn2"].word == "equivalent within ±0.05"
    assert got["attn", "ffn"].word == "attn better"
    assert got["attn2", "ffn"].word == "attn2 better"
    # Holm over the three TOST p-values: the equivalent pair's smallest p is tripled.
    v = got["attn", "attn2"]
    assert v.p_tost_holm == pytest.approx(3 * v.tost.p)


def test_inconclusive_where_a_t_test_says_within_noise():
    by_seed = {
        "a": _seeds([3.00, 3.10, 2.95]),
        "b": _seeds([3.06, 3.02, 3.05]),  # noisy, mean difference 0.027
    }
    (v,) = verdicts_by_seed(by_seed, margin=0.05)
    assert v.test.verdict == "within noise"  # the plain paired t-test
    assert v.tost.p > 0.05
    assert v.word == "inconclusive"


def test_b_better_and_margin_must_be_positive():
    by_seed = {"a": _seeds([3.3, 3.31, 3.29]), "b": _seeds([3.0, 3.02, 2.99])}
    (v,) = verdicts_by_seed(by_seed, margin=0.01)
    assert v.word == "b better"
    with pytest.raises(ValueError, match="positive"):
        verdicts_by_seed(by_seed, margin=0.0)
