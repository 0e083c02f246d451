"""Selection on validation, judgement on test: one grid point per placement and task.

``select_settings`` is the one place a study's grid is decided: for each (task, placement)
it averages a validation metric over each grid point's finished seeds and keeps the best.
It reads nothing but that metric, so test-split numbers can never steer a choice.
``headline_view`` then presents the chosen runs with their test-split numbers in place of
the validation ones, so every existing table and test reads the held-out numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from loraplace.analysis.aggregate import Estimate, estimate
from loraplace.analysis.read import TRAINED_KINDS, RunRecord, StudyData
from loraplace.metrics import (
    ACCURACY,
    EVAL_LOSS,
    EVAL_PPL,
    EVAL_TOKENS,
    FLOOR,
    TASK_PREFIX,
    TEST_FLOOR,
    TEST_LOSS,
    TEST_PREFIX,
    TEST_TOKENS,
    TEST_ZERO_SHOT_LOSS,
    ZERO_SHOT_LOSS,
    default_goal,
    metric_on_test,
)

# Validation metric -> its test-split counterpart, for the headline view.
TEST_METRICS = {
    EVAL_LOSS: TEST_LOSS,
    ZERO_SHOT_LOSS: TEST_ZERO_SHOT_LOSS,
    FLOOR: TEST_FLOOR,
    EVAL_TOKENS: TEST_TOKENS,
}
VALIDATION_ONLY = (EVAL_PPL, "mean_batch_ppl")  # derived from the validation loss only


@dataclass(frozen=True)
class GridPoint:
    """One grid point of one placement: its runs' label, setting and validation score."""

    label: str  # the runs' placement label, e.g. "seed-ffn@lr0.001"
    setting: dict[str, Any]  # e.g. {"lr": 0.001}
    score: Estimate  # the selection metric over the point's finished seeds


@dataclass(frozen=True)
class Selection:
    """The grid point chosen for one placement on one task, and every point it beat."""

    task: str | None
    placement: str  # the placement's name without a grid point
    by: str  # the validation metric selected on
    goal: str  # "min" | "max"
    chosen: GridPoint
    points: tuple[GridPoint, ...]  # every point with a finished seed, in study order


def grid_points_of(study: StudyData, task: str | None, placement: str, by: str) -> list[GridPoint]:
    """The grid points of one placement on one task, scored by ``by`` over finished seeds."""
    by_label: dict[str, list[RunRecord]] = {}
    for r in study.runs:
        if r.kind in TRAINED_KINDS and r.task == task and r.placement_base == placement:
            by_label.setdefault(r.placement, []).append(r)
    points = []
    for label, runs in by_label.items():
        score = estimate(r.metrics[by] for r in runs if r.done and by in r.metrics)
        if score is not None:
            points.append(GridPoint(label, runs[0].setting, score))
    return points


def select_settings(
    study: StudyData, by: str = EVAL_LOSS, goal: str | None = None
) -> list[Selection]:
    """Per (task, placement), the grid point with the best seed-mean ``by`` (validation).

    Ties go to the first point in study order. A placement none of whose runs has ``by``
    gets no selection. Raises ValueError for a test-split metric.
    """
    if by.startswith(TEST_PREFIX):
        raise ValueError(f"selection reads validation metrics only, not {by!r}")
    goal = goal or default_goal(by)
    sign = 1.0 if goal == "min" else -1.0
    out = []
    for task in study.tasks():
        bases = dict.fromkeys(
            r.placement_base for r in study.runs if r.task == task and r.kind in TRAINED_KINDS
        )
        for base in bases:
            points = grid_points_of(study, task, base, by)
            if points:
                best = min(points, key=lambda p: sign * p.score.mean)
                out.append(Selection(task, base, by, goal, best, tuple(points)))
    return out


def _as_test(run: RunRecord, label: str | None) -> RunRecord:
    """The run with its test-split numbers where its validation numbers were (a run
    without a test split keeps its validation numbers)."""
    if TEST_LOSS not in run.metrics:
        return dataclasses.replace(run, placement=label or run.placement)
    metrics = dict(run.metrics)
    for val_name, test_name in TEST_METRICS.items():
        metrics.pop(val_name, None)
        if test_name in run.metrics:
            metrics[val_name] = run.metrics[test_name]
    # Task scores have test twins too (test_task:x, test_accuracy): read those.
    for name in run.metrics:
        if (name.startswith(TASK_PREFIX) or name == ACCURACY) and metric_on_test(name) in metrics:
            metrics[name] = run.metrics[metric_on_test(name)]
    # Perplexities measured on validation have no test twin; kept, they would sit beside
    # the test loss as if exp of it (the report then warned "eval_ppl is not exp(eval_loss)"
    # for every chosen run) and the batch-perplexity inflation would mix the two splits.
    for name in VALIDATION_ONLY:
        metrics.pop(name, None)
    metrics["val_loss"] = run.metrics.get(EVAL_LOSS, float("nan"))
    return dataclasses.replace(run, placement=label or run.placement, metrics=metrics)


def has_test_split(study: StudyData) -> bool:
    return any(TEST_LOSS in r.metrics for r in study.runs if r.done)


def headline_view(study: StudyData, selections: list[Selection], task: str | None) -> StudyData:
    """One task's study as the report's headline reads it: the chosen runs only, named by
    their placement, with test-split numbers (eval_loss is test loss; val_loss keeps the
    validation loss). Zero-shot runs come along, on test too; the runs of the settings not
    chosen that finished no numbers (pruned, diverged, flagged ...) stay listed, as without
    selection."""
    chosen = {s.chosen.label: s.placement for s in selections if s.task == task}
    runs = []
    for r in study.runs:
        if r.task != task:
            continue
        if r.kind in TRAINED_KINDS and r.placement in chosen:
            runs.append(_as_test(r, chosen[r.placement]))
        elif r.kind not in TRAINED_KINDS:
            runs.append(_as_test(r, None))
        elif r.status != "done":  # pruned, diverged, flagged, failed: listed, never averaged
            runs.append(r)
    return dataclasses.replace(study, runs=runs)


def ranking_at_points(
    study: StudyData, task: str | None, by: str = EVAL_LOSS
) -> dict[tuple, list[str]]:
    """At each grid point (its setting as sorted items), the placements ordered best first.

    Only points that every placement of the task has are compared.
    """
    sign = 1.0 if default_goal(by) == "min" else -1.0
    scores: dict[tuple, dict[str, float]] = {}
    bases = dict.fromkeys(
        r.placement_base for r in study.runs if r.task == task and r.kind in TRAINED_KINDS
    )
    for base in bases:
        for p in grid_points_of(study, task, base, by):
            scores.setdefault(tuple(sorted(p.setting.items())), {})[base] = p.score.mean
    return {
        key: sorted(row, key=lambda b: sign * row[b])
        for key, row in scores.items()
        if len(row) == len(bases)
    }


def ranking_flips(rankings: dict[tuple, list[str]]) -> bool:
    """True when the order of placements is not the same at every grid point."""
    return len({tuple(order) for order in rankings.values()}) > 1
