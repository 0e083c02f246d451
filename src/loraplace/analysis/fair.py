"""Fair comparisons of a study, task by task: selection, test numbers, verdicts, agreement.

``compare`` is what the report and ``loraplace run`` read: per task, the summary the
headline reports (the selected grid point of each placement, on the test split when the
study holds one out), the pairwise verdicts against the study's margin, whether the
ranking of placements holds at every grid point, and how many seeds would resolve the
observed differences; across tasks, the placement x task rank table and Kendall's W.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from loraplace.analysis.aggregate import Summary, summarize
from loraplace.analysis.agreement import KendallW, RankTable, kendall_w, rank_table
from loraplace.analysis.equivalence import Verdict, verdicts
from loraplace.analysis.power import POWER, seeds_for_difference, seeds_for_margin
from loraplace.analysis.read import StudyData
from loraplace.analysis.selection import (
    Selection,
    has_test_split,
    headline_view,
    ranking_at_points,
    ranking_flips,
    select_settings,
)
from loraplace.metrics import EVAL_LOSS


@dataclass(frozen=True)
class SeedPlan:
    """Seeds that would resolve one pair's observed difference (and the margin) at 80 %."""

    a: str
    b: str
    seeds: int  # seeds both placements have now
    diff: float  # observed mean paired difference, a minus b
    sd: float  # standard deviation of the paired differences over seeds
    for_difference: int | None  # seeds to detect ``diff`` (None: beyond any seed budget)
    for_margin: int | None  # seeds to show |diff| < margin (None: no margin, or diff outside)


@dataclass
class TaskComparison:
    """One task: its headline summary and the comparisons built on it."""

    task: str | None
    summary: Summary
    verdicts: list[Verdict] = field(default_factory=list)  # empty without a margin
    rankings: dict[tuple, list[str]] = field(default_factory=dict)  # grid point -> order
    seed_plans: list[SeedPlan] = field(default_factory=list)

    @property
    def ranking_flips(self) -> bool:
        return ranking_flips(self.rankings)

    def best(self) -> str:
        return min(self.summary.placements, key=lambda p: p.loss.mean).placement


@dataclass
class FairComparison:
    """The study's fair comparisons; ``on_test`` says where the headline numbers come from."""

    study: StudyData  # the whole study (every task, every grid point)
    tasks: list[TaskComparison]
    selections: list[Selection]
    select_by: str | None
    on_test: bool
    margin: float | None
    ranks: RankTable | None = None  # multi-task studies only
    kendall: KendallW | None = None

    def task(self, name: str | None) -> TaskComparison:
        return next(t for t in self.tasks if t.task == name)

    @property
    def best_depends_on_task(self) -> bool:
        return self.ranks is not None and self.ranks.best_depends_on_task


def seed_plans(s: Summary, margin: float | None) -> list[SeedPlan]:
    """Per pair of placements, seeds to resolve the observed difference (and margin)."""
    out = []
    for x, y in combinations(s.placements, 2):
        a, b = x.loss_by_seed, y.loss_by_seed
        shared = sorted(set(a) & set(b))
        if len(shared) < 2:
            continue
        d = np.array([a[k] - b[k] for k in shared])
        sd, diff = float(np.std(d, ddof=1)), float(d.mean())
        if not math.isfinite(sd):
            continue
        out.append(
            SeedPlan(
                x.placement,
                y.placement,
                len(shared),
                diff,
                sd,
                seeds_for_difference(diff, sd, POWER),
                seeds_for_margin(margin, sd, diff, POWER) if margin else None,
            )
        )
    return out


def compare(study: StudyData, reference: str | None = None) -> FairComparison:
    """Every task's headline and comparisons, from the study's own select/analysis keys."""
    select_cfg = study.config.get("select")
    margin = (study.config.get("analysis") or {}).get("margin")
    selections: list[Selection] = []
    if select_cfg:
        # The metric's own direction, never a stored goal: a study stored before goal was
        # checked (study/bounds.py) may say max for a loss, which would pick the worst.
        selections = select_settings(study, select_cfg.get("by", EVAL_LOSS))
    tasks = []
    for task in study.tasks():
        # A selection that chose nothing (no run stores its metric: a study stored before
        # select.by was checked) leaves the grid points at their validation numbers.
        chosen = any(s.task == task for s in selections)
        view = headline_view(study, selections, task) if chosen else study.for_task(task)
        s = summarize(view, reference)
        if not s.placements:
            continue
        tasks.append(
            TaskComparison(
                task,
                s,
                verdicts(s, margin) if margin else [],
                ranking_at_points(study, task),
                seed_plans(s, margin),
            )
        )
    on_test = bool(selections) and has_test_split(study)
    fair = FairComparison(study, tasks, selections, (select_cfg or {}).get("by"), on_test, margin)
    if len(tasks) > 1:
        fair.ranks = rank_table(
            {str(t.task): {p.placement: p.loss.mean for p in t.summary.placements} for t in tasks}
        )
        fair.kendall = kendall_w(fair.ranks.ranks)
    return fair


def seed_warning(fair: FairComparison) -> str | None:
    """One line when the study's seeds cannot resolve its margin, else None.

    A pair within the margin needs enough seeds to show equivalence; a pair outside it
    enough to show the difference. The line names the hardest pair and the seeds it needs.
    """
    if not fair.margin:
        return None
    short: list[tuple[int | None, str, SeedPlan]] = []
    for t in fair.tasks:
        for p in t.seed_plans:
            need = p.for_margin if abs(p.diff) < fair.margin else p.for_difference
            if need is None or need > p.seeds:
                short.append((need, str(t.task or ""), p))
    if not short:
        return None
    need, task, p = max(short, key=lambda x: x[0] if x[0] is not None else math.inf)
    where = f" on {task}" if task else ""
    needs = f"needs {need}" if need is not None else "cannot be resolved with any seed budget"
    return (
        f"{p.seeds} seeds are too few to resolve the ±{fair.margin:g} margin: {p.a} vs {p.b}"
        f"{where} (difference {p.diff:+.4f}, seed sd {p.sd:.4f}) {needs} at 80 % power; "
        f"{len(short)} pair(s) unresolved: add seeds to the study"
    )
