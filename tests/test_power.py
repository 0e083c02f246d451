"""Seed planning: textbook sample sizes and a simulated check of the TOST power."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from loraplace.analysis.power import (
    power_difference,
    power_equivalence,
    seeds_for_difference,
    seeds_for_margin,
)


@pytest.mark.parametrize("d, n", [(0.5, 34), (0.8, 15), (1.0, 10), (2.0, 5)])
def test_seeds_for_difference_matches_gpower(d, n):
    # G*Power, one-sample / matched-pairs t test, two-tailed, alpha 0.05, power 0.80.
    assert seeds_for_difference(d * 0.02, 0.02) == n
    assert power_difference(n, d, 1.0) >= 0.8 > power_difference(n - 1, d, 1.0)


def test_seeds_for_difference_edge_cases():
    assert seeds_for_difference(0.0, 0.1) is None
    assert seeds_for_difference(0.1, 0.0) == 2
    assert seeds_for_difference(1e-6, 1.0) is None  # beyond any seed budget


def _simulated_tost_power(n, margin, sd, diff, reps=40_000):
    rng = np.random.default_rng(0)
    d = rng.normal(diff, sd, size=(reps, n))
    se = d.std(axis=1, ddof=1) / np.sqrt(n)
    crit = stats.t.ppf(0.95, n - 1)
    mean = d.mean(axis=1)
    return float(np.mean(((mean + margin) / se > crit) & ((mean - margin) / se < -crit)))


@pytest.mark.parametrize("n, margin, diff", [(36, 0.5, 0.0), (11, 1.0, 0.0), (20, 1.0, 0.3)])
def test_power_equivalence_matches_simulation(n, margin, diff):
    assert power_equivalence(n, margin, 1.0, diff) == pytest.approx(
        _simulated_tost_power(n, margin, 1.0, diff), abs=0.01
    )


def test_seeds_for_margin():
    n = seeds_for_margin(0.5, 1.0)
    assert n == 36
    assert power_equivalence(n, 0.5, 1.0) >= 0.8 > power_equivalence(n - 1, 0.5, 1.0)
    assert seeds_for_margin(0.1, 1.0, diff=0.2) is None  # true difference outside the margin
