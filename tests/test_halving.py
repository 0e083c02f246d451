"""Successive halving: the rung schedule against hand-computed values, and survivors."""

from __future__ import annotations

import pytest

from loraplace.study.halving import keep_count, rung_steps, survivors


@pytest.mark.parametrize(
    "total, rungs, reduction, expected",
    [
        (120, 1, 3, [40]),  # 120 / 3
        (120, 2, 3, [14, 40]),  # ceil(120 / 9) = 14, 120 / 3 = 40
        (120, 3, 3, [5, 14, 40]),  # ceil(120 / 27) = 5
        (100, 2, 2, [25, 50]),
        (12, 3, 2, [2, 3, 6]),  # ceil(12 / 8) = 2, ceil(12 / 4) = 3, 12 / 2 = 6
        (4, 3, 3, [1, 2]),  # ceil(4/27) = ceil(4/9) = 1: merged; ceil(4/3) = 2
        (1, 2, 3, []),  # nothing to judge before the only step
    ],
)
def test_rung_steps_hand_computed(total, rungs, reduction, expected):
    assert rung_steps(total, rungs, reduction) == expected


@pytest.mark.parametrize(
    "n, reduction, kept", [(3, 3, 1), (4, 3, 2), (9, 3, 3), (1, 3, 1), (8, 2, 4)]
)
def test_keep_count_is_the_best_share(n, reduction, kept):
    assert keep_count(n, reduction) == kept


def test_survivors_by_seed_mean_with_ties_to_the_earlier_label():
    scores = {
        "a@lr0.001": [2.50, 2.40, 2.45],  # mean 2.45
        "a@lr0.002": [2.30, 2.50, 2.40],  # mean 2.40: best
        "a@lr0.004": [2.60, 2.20, 2.70],  # mean 2.50
    }
    assert survivors(scores, 3) == ["a@lr0.002"]
    assert survivors(scores, 2) == ["a@lr0.001", "a@lr0.002"]  # ceil(3/2) = 2, study order
    assert survivors(scores, 3, goal="max") == ["a@lr0.004"]
    tied = {"x": [1.0, 3.0], "y": [2.0, 2.0], "z": [5.0]}
    assert survivors(tied, 3) == ["x"]
    # a setting whose every seed diverged has no score and never survives
    assert survivors({"x": [], "y": [9.0], "z": [8.0]}, 3) == ["z"]
