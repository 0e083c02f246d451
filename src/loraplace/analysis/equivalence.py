"""Equivalence, not just significance: TOST against a margin, and the four verdict words.

A paired t-test that does not reject says only "not shown different"; it is no evidence
that two placements are alike. Two one-sided tests (TOST) reject "the difference is at
least ``margin``" in each direction, so a rejection means the difference lies within
±margin. Each pair of placements gets one of four verdicts:

- "equivalent within ±margin": TOST rejects (Holm-adjusted over the pairs). A difference
  inside the margin is by definition too small to matter, even when it is significant.
- "<a> better" / "<b> better": the paired t-test rejects (Holm-adjusted), TOST does not.
- "inconclusive": neither rejects; more seeds would tell (see ``analysis.power``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from loraplace.analysis.aggregate import Summary
from loraplace.analysis.dist import t_cdf, t_sf
from loraplace.analysis.stats import ALPHA, PairedTest, holm, paired_tests_by_seed

EQUIVALENT = "equivalent within ±{margin:g}"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Tost:
    """Two one-sided t-tests of H0: mean difference <= -margin, and >= +margin."""

    diff: float  # mean difference (a minus b), in the metric's units
    margin: float
    df: float
    t_lower: float  # t for H1: diff > -margin
    p_lower: float
    t_upper: float  # t for H1: diff < +margin
    p_upper: float

    @property
    def p(self) -> float:
        """The TOST p-value: the larger of the two one-sided p-values."""
        return max(self.p_lower, self.p_upper)


def _tost(diff: float, se: float, df: float, margin: float) -> Tost | None:
    if not (se > 0 and df > 0 and math.isfinite(se)):
        return None
    t_lo = (diff + margin) / se
    t_hi = (diff - margin) / se
    return Tost(diff, margin, df, t_lo, t_sf(t_lo, df), t_hi, t_cdf(t_hi, df))


def tost_paired(a: list[float], b: list[float], margin: float) -> Tost | None:
    """TOST on paired samples (same seeds, same order); None with < 2 pairs or no spread."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size < 2:
        return None
    se = float(np.std(d, ddof=1)) / math.sqrt(d.size)
    return _tost(float(d.mean()), se, d.size - 1, margin)


def tost_welch(a: list[float], b: list[float], margin: float) -> Tost | None:
    """TOST on independent samples with Welch's unequal-variance t (no shared seeds)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return None
    vx, vy = float(np.var(x, ddof=1)) / x.size, float(np.var(y, ddof=1)) / y.size
    se = math.sqrt(vx + vy)
    if se == 0:
        return None
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    return _tost(float(x.mean() - y.mean()), se, df, margin)


@dataclass(frozen=True)
class Verdict:
    """One pair's verdict: the paired difference test and TOST, both Holm-adjusted."""

    test: PairedTest
    margin: float
    tost: Tost | None
    p_tost_holm: float | None

    @property
    def a(self) -> str:
        return self.test.a

    @property
    def b(self) -> str:
        return self.test.b

    @property
    def equivalent(self) -> bool:
        return self.p_tost_holm is not None and self.p_tost_holm < ALPHA

    @property
    def word(self) -> str:
        """'<a> better', '<b> better', 'equivalent within ±margin' or 'inconclusive'."""
        if self.equivalent:
            return EQUIVALENT.format(margin=self.margin)
        if self.test.p_holm is not None and self.test.p_holm < ALPHA:
            assert self.test.diff is not None
            return f"{self.a} better" if self.test.diff.mean < 0 else f"{self.b} better"
        return INCONCLUSIVE


def verdicts_for(tests: list[PairedTest], by_seed: dict[str, dict[int, float]], margin: float):
    """Verdicts for already Holm-adjusted ``tests``; TOST gets its own Holm family."""
    if not margin > 0:
        raise ValueError(f"the equivalence margin must be positive (got {margin})")
    tosts = []
    for t in tests:
        a, b = by_seed[t.a], by_seed[t.b]
        tosts.append(tost_paired([a[s] for s in t.seeds], [b[s] for s in t.seeds], margin))
    adjusted = holm([x.p if x is not None else None for x in tosts])
    return [Verdict(t, margin, x, p) for t, x, p in zip(tests, tosts, adjusted, strict=True)]


def verdicts(summary: Summary, margin: float) -> list[Verdict]:
    """Every pair of placements (study order) on eval loss: difference test and TOST."""
    return verdicts_by_seed({p.placement: p.loss_by_seed for p in summary.placements}, margin)


def verdicts_by_seed(by_seed: dict[str, dict[int, float]], margin: float) -> list[Verdict]:
    """Verdicts from plain per-seed numbers (name -> seed -> value, lower is better)."""
    return verdicts_for(paired_tests_by_seed(by_seed), by_seed, margin)
