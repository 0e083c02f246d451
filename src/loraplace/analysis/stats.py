"""Paired comparisons between placements over shared seeds, Holm-corrected."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from loraplace.analysis.aggregate import Estimate, Summary, estimate
from loraplace.analysis.dist import ttest_rel

ALPHA = 0.05


@dataclass(frozen=True)
class PairedTest:
    """Eval loss of ``a`` minus ``b`` on the seeds both finished (negative: ``a`` is better)."""

    a: str
    b: str
    seeds: tuple[int, ...]
    diff: Estimate | None  # mean and 95 % CI of the per-seed differences
    t: float | None
    p: float | None  # two-sided paired t-test; None when it cannot be computed
    p_holm: float | None = None

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def verdict(self) -> str:
        """'<a> better', '<b> better', 'within noise', or why no test was possible."""
        if self.p_holm is None:
            if self.n < 2:
                return "untestable (fewer than 2 shared seeds)"
            return "untestable (identical differences on every seed)"
        if self.p_holm >= ALPHA:
            return "within noise"
        assert self.diff is not None
        return f"{self.a} better" if self.diff.mean < 0 else f"{self.b} better"

    @property
    def within_noise(self) -> bool:
        return self.p_holm is None or self.p_holm >= ALPHA


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values; None entries are left out of the family."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)  # ties: by index
    m = len(present)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for k, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


def paired_test(a: str, a_by_seed: dict[int, float], b: str, b_by_seed: dict[int, float]):
    """One paired t-test of a against b over the seeds both have."""
    seeds = tuple(sorted(set(a_by_seed) & set(b_by_seed)))
    diffs = [a_by_seed[s] - b_by_seed[s] for s in seeds]
    t = p = None
    if len(seeds) >= 2 and float(np.std(diffs, ddof=1)) > 0:
        t_, p_ = ttest_rel([a_by_seed[s] for s in seeds], [b_by_seed[s] for s in seeds])
        if math.isfinite(p_):
            t, p = t_, p_
    return PairedTest(a, b, seeds, estimate(diffs), t, p)


def paired_tests(summary: Summary) -> list[PairedTest]:
    """All pairs of placements (study order), Holm-corrected as one family."""
    return paired_tests_by_seed({x.placement: x.loss_by_seed for x in summary.placements})


def paired_tests_by_seed(by_seed: dict[str, dict[int, float]]) -> list[PairedTest]:
    """All pairs of ``by_seed`` (name -> seed -> value, in its order), Holm-corrected."""
    tests = [paired_test(x, by_seed[x], y, by_seed[y]) for x, y in combinations(by_seed, 2)]
    adjusted = holm([t.p for t in tests])
    return [
        PairedTest(t.a, t.b, t.seeds, t.diff, t.t, t.p, adj)
        for t, adj in zip(tests, adjusted, strict=True)
    ]


def find_test(tests: list[PairedTest], a: str, b: str) -> PairedTest | None:
    for t in tests:
        if {t.a, t.b} == {a, b}:
            return t
    return None
