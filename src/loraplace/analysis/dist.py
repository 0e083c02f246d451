"""The t, normal, noncentral-t and chi-square functions the statistics use, on scipy.special.

scipy.stats computes its distributions with these same special functions, but importing
it takes ~0.4 s, a fifth of `loraplace report`'s 2 s. tests/test_dist.py checks every
function here against scipy.stats. Rank statistics (rankdata, spearmanr) still import
scipy.stats, inside the functions that need them, off the default report's path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special as sc


def t_ppf(q: float, df: float) -> float:
    """Student t quantile (``scipy.stats.t.ppf``)."""
    return float(sc.stdtrit(df, q))


def t_cdf(x: float, df: float) -> float:
    return float(sc.stdtr(df, x))


def t_sf(x: float, df: float) -> float:
    return float(sc.stdtr(df, -x))  # the t distribution is symmetric


def norm_ppf(q: float) -> float:
    return float(sc.ndtri(q))


def nct_cdf(x: float, df: float, nc: float) -> float:
    """Noncentral t CDF (``scipy.stats.nct.cdf``)."""
    return float(sc.nctdtr(df, nc, x))


def nct_sf(x: float, df: float, nc: float) -> float:
    """Noncentral t survival function: P(T > x) = P(-T < -x), and -T is nct(df, -nc).

    Written as a CDF rather than 1 - cdf, so a small tail keeps its digits.
    """
    return float(sc.nctdtr(df, -nc, -x))


def chi2_sf(x: float, df: float) -> float:
    """Chi-square survival function (``scipy.stats.chi2.sf``, its support rules too)."""
    if not df > 0:
        return math.nan
    return 1.0 if x < 0 else float(sc.chdtrc(df, x))


def ttest_rel(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Paired t-test (``scipy.stats.ttest_rel``, two-sided): (t, p).

    The arithmetic follows scipy's order (biased variance, rescaled), so the numbers match
    it bit for bit and reports built before this module stay identical; so do its edge
    cases: constant non-zero differences give (±inf, 0), identical samples (nan, nan).
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = d.size
    if n < 2:
        return math.nan, math.nan
    mean = np.mean(d)
    var = np.mean((d - mean) ** 2) * (n / (n - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = float(mean / np.sqrt(var / n))
    return t, float(2 * sc.stdtr(n - 1, -abs(t)))
