"""Seed planning: how many seeds would resolve a difference, or a margin, at a given power.

A paired comparison over seeds is a one-sample t-test on the per-seed differences, whose
power at n seeds follows the noncentral t distribution (noncentrality d * sqrt(n), d the
difference over its seed standard deviation). The seeds needed are the smallest n that
reaches the power. For equivalence (TOST within ±margin) the power is the usual
approximation 1 - P(lower test fails) - P(upper test fails), floored at 0.
"""

from __future__ import annotations

import math

from loraplace.analysis.dist import nct_cdf, nct_sf, norm_ppf, t_ppf
from loraplace.analysis.stats import ALPHA

POWER = 0.8
MAX_SEEDS = 1_000  # beyond this the answer is "not with seeds": say so instead


def power_difference(n: int, diff: float, sd: float, alpha: float = ALPHA) -> float:
    """Power of a two-sided paired t-test with ``n`` seeds to detect a true ``diff``."""
    if n < 2:
        return 0.0
    df = n - 1
    nc = abs(diff) / sd * math.sqrt(n)
    crit = t_ppf(1 - alpha / 2, df)
    return nct_sf(crit, df, nc) + nct_cdf(-crit, df, nc)


def power_equivalence(
    n: int, margin: float, sd: float, diff: float = 0.0, alpha: float = ALPHA
) -> float:
    """Approximate power of paired TOST with ``n`` seeds to show |diff| < margin."""
    if n < 2 or abs(diff) >= margin:
        return 0.0
    df = n - 1
    se = sd / math.sqrt(n)
    crit = t_ppf(1 - alpha, df)
    fail_lower = nct_cdf(crit, df, (diff + margin) / se)
    fail_upper = nct_sf(-crit, df, (diff - margin) / se)
    return max(0.0, 1.0 - fail_lower - fail_upper)


def _smallest_n(power_at, target: float, start: int) -> int | None:
    """Smallest n >= start with power_at(n) >= target, scanning up; None past MAX_SEEDS.

    ``start`` is a normal-approximation lower bound (the t test needs at least as many).
    """
    for n in range(max(2, start), MAX_SEEDS + 1):
        if power_at(n) >= target:
            return n
    return None


def _normal_n(effect: float, z_alpha: float, power: float) -> int:
    """The normal-approximation sample size for a standardized ``effect``, rounded down."""
    z = z_alpha + norm_ppf(power)
    return int(min(MAX_SEEDS, (z / effect) ** 2))


def seeds_for_difference(
    diff: float, sd: float, power: float = POWER, alpha: float = ALPHA
) -> int | None:
    """Seeds needed to detect a true paired difference ``diff`` with seed std ``sd``.

    0 seeds spread (sd == 0) needs the minimum of 2; a zero diff can never be detected (None).
    """
    if sd <= 0:
        return 2 if diff != 0 else None
    if diff == 0:
        return None
    start = _normal_n(abs(diff) / sd, norm_ppf(1 - alpha / 2), power)
    return _smallest_n(lambda n: power_difference(n, diff, sd, alpha), power, start)


def seeds_for_margin(
    margin: float, sd: float, diff: float = 0.0, power: float = POWER, alpha: float = ALPHA
) -> int | None:
    """Seeds needed to show equivalence within ±margin when the true difference is ``diff``."""
    if abs(diff) >= margin:
        return None
    if sd <= 0:
        return 2
    # One one-sided test's sample size: a lower bound, since TOST needs both to pass.
    start = _normal_n((margin - abs(diff)) / sd, norm_ppf(1 - alpha), power)
    return _smallest_n(lambda n: power_equivalence(n, margin, sd, diff, alpha), power, start)
