"""Kendall's W on known inputs (hand-worked and via Friedman's test), and the rank table."""

from __future__ import annotations

import pytest
from scipy import stats

from loraplace.analysis.agreement import kendall_w, rank_table


def test_kendall_w_hand_worked():
    # Rank sums 4, 6, 8, 12 (mean 7.5): S = 35; W = 12 S / (m^2 (n^3 - n)) = 420 / 540.
    got = kendall_w([[1, 2, 3, 4], [2, 1, 3, 4], [1, 3, 2, 4]])
    assert got.w == pytest.approx(7 / 9)
    assert got.chi2 == pytest.approx(7.0)  # m (n - 1) W
    assert got.df == 3
    assert got.p == pytest.approx(stats.chi2.sf(7.0, 3))
    assert (got.m, got.n) == (3, 4)


def test_kendall_w_tie_correction_hand_worked():
    # Rank sums 2.5, 3.5, 6: S = 6.5; one tie of 2 in the second row: sum(t^3 - t) = 6;
    # W = 12 * 6.5 / (2^2 (27 - 3) - 2 * 6) = 78 / 84.
    got = kendall_w([[1, 2, 3], [1.5, 1.5, 3]])
    assert got.w == pytest.approx(78 / 84)


@pytest.mark.parametrize(
    "scores",
    [
        [[3.1, 3.4, 3.2, 3.9], [3.0, 3.5, 3.6, 3.8], [2.9, 2.9, 3.3, 3.1], [4.0, 4.1, 4.1, 4.1]],
        [[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [2.0, 2.0, 1.0]],
    ],
)
def test_kendall_w_is_friedman_chi2_over_m_n_minus_1(scores):
    # Friedman's statistic (scipy, tie-corrected) equals m (n - 1) W.
    m, n = len(scores), len(scores[0])
    ranks = [stats.rankdata(row) for row in scores]
    got = kendall_w(ranks)
    fr = stats.friedmanchisquare(*[[row[j] for row in scores] for j in range(n)])
    assert got.chi2 == pytest.approx(fr.statistic, rel=1e-12)
    assert got.w == pytest.approx(fr.statistic / (m * (n - 1)), rel=1e-12)
    assert got.p == pytest.approx(fr.pvalue, rel=1e-12)


def test_kendall_w_perfect_and_undefined():
    assert kendall_w([[1, 2, 3]] * 4).w == pytest.approx(1.0)
    assert kendall_w([[1, 2], [2, 1]]).w == pytest.approx(0.0)
    assert kendall_w([[1, 2, 3]]) is None  # one rater
    assert kendall_w([[1.5, 1.5], [1.5, 1.5]]) is None  # all tied


def test_rank_table_and_task_dependence():
    table = rank_table(
        {
            "copy": {"attn": 2.0, "ffn": 2.5, "full": 2.0},
            "transition": {"attn": 3.0, "ffn": 2.7, "full": 2.8, "extra": 1.0},
        }
    )
    assert table.placements == ("attn", "ffn", "full")  # "extra" is not on every task
    assert table.ranks == ((1.5, 3.0, 1.5), (3.0, 1.0, 2.0))
    assert table.best("copy") == ["attn", "full"]
    assert table.best("transition") == ["ffn"]
    assert table.best_depends_on_task
    same = rank_table({"x": {"a": 1.0, "b": 2.0}, "y": {"a": 0.5, "b": 0.7}})
    assert not same.best_depends_on_task
