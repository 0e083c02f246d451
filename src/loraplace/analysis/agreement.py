"""Do the tasks agree on the placements? A rank table and Kendall's W with its p-value.

Each task ranks the placements by a score (lower is better: eval loss); tied scores share
the average rank. Kendall's coefficient of concordance W runs from 0 (no agreement) to 1
(every task ranks the placements the same way); with ties it carries the usual correction
(Kendall & Babington Smith 1939; Siegel & Castellan 1988, §9.4), and its significance is
the chi-square approximation ``m (n - 1) W`` on ``n - 1`` degrees of freedom, the same
statistic as Friedman's test.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from loraplace.analysis.dist import chi2_sf


@dataclass(frozen=True)
class RankTable:
    """Rank of each placement (columns) on each task (rows); 1 = best."""

    tasks: tuple[str, ...]
    placements: tuple[str, ...]
    ranks: tuple[tuple[float, ...], ...]  # [task][placement]

    def rank(self, task: str, placement: str) -> float:
        return self.ranks[self.tasks.index(task)][self.placements.index(placement)]

    def best(self, task: str) -> list[str]:
        """The placement(s) ranked first on ``task`` (several when tied)."""
        row = self.ranks[self.tasks.index(task)]
        top = min(row)
        return [p for p, r in zip(self.placements, row, strict=True) if r == top]

    @property
    def best_depends_on_task(self) -> bool:
        """True when no single placement is ranked first (alone or tied) on every task."""
        common = set(self.placements)
        for task in self.tasks:
            common &= set(self.best(task))
        return not common


def rank_table(scores: dict[str, dict[str, float]]) -> RankTable:
    """Ranks from ``scores`` (task -> placement -> score, lower is better).

    Only placements scored on every task are ranked, in first-seen order.
    """
    from scipy.stats import rankdata  # 0.4 s to import: only multi-task reports pay it

    tasks = tuple(scores)
    placements = tuple(
        p
        for p in dict.fromkeys(p for row in scores.values() for p in row)
        if all(p in scores[t] for t in tasks)
    )
    ranks = tuple(
        tuple(float(r) for r in rankdata([scores[t][p] for p in placements])) for t in tasks
    )
    return RankTable(tasks, placements, ranks)


@dataclass(frozen=True)
class KendallW:
    """Kendall's W over m raters (tasks) and n objects (placements)."""

    w: float
    chi2: float
    df: int
    p: float  # chi-square approximation; rough for n < 8 or m < 3 (say so where shown)
    m: int
    n: int


def kendall_w(ranks: list[list[float]] | tuple[tuple[float, ...], ...]) -> KendallW | None:
    """Kendall's W of a rank matrix [rater][object] with tie correction.

    None when it is undefined: fewer than 2 raters or objects, or every rater ties everything.
    """
    r = np.asarray(ranks, dtype=float)
    if r.ndim != 2 or r.shape[0] < 2 or r.shape[1] < 2:
        return None
    m, n = r.shape
    totals = r.sum(axis=0)
    s = float(((totals - totals.mean()) ** 2).sum())
    # Each group of t tied ranks in a rater's row lowers the maximum of S by (t^3 - t)/12.
    ties = sum(t**3 - t for row in r for t in Counter(row.tolist()).values())
    denom = m**2 * (n**3 - n) - m * ties
    if denom <= 0:
        return None
    w = 12.0 * s / denom
    chi2 = m * (n - 1) * w
    return KendallW(w, chi2, n - 1, chi2_sf(chi2, n - 1), m, n)
