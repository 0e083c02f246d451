"""Task accuracy across models and tasks: one cell per (model, task), each with the
placements' (and the zero-shot model's) accuracy over seeds and the best placement tested
against the others.

Each cell reads its model's fair comparison (``fair.compare`` on that model's runs): the
headline view of the chosen settings, on the test split when the study has one (the view
puts ``test_task:x`` where ``task:x`` was). The tests are ``tasks.best_tests``: paired over
shared seeds, Holm-corrected within the cell, as the report's other tests are.
"""

from __future__ import annotations

from dataclasses import dataclass

from loraplace.analysis.fair import FairComparison
from loraplace.analysis.task_metrics import BestTest, TaskRow, best_tests, task_metrics, task_rows
from loraplace.metrics import ACCURACY, TASK_PREFIX

# The order reported by LoRA Learns Less and Forgets Less and LoRA Without Regret, best first.
PAPER_ORDER = ("all-linear", "mlp", "attention")


@dataclass(frozen=True)
class AccuracyCell:
    """One model on one task: each row's accuracy over seeds, the best and its tests."""

    model: str | None  # None in a single-model study
    task: str | None  # None in a single-task study
    metric: str  # task:<name> or accuracy
    rows: list[TaskRow]  # zero-shot first (when the study has it), then the placements
    best: str | None
    tests: list[BestTest]  # best against every other row, Holm within the cell


def headline_metric(names: list[str], chosen: str = "loss") -> str | None:
    """The task metric to lead with: the report's chosen one, else the study's only task,
    else the mean over tasks; None when the study stores no task metric."""
    if not names:
        return None
    if chosen in names:
        return chosen
    tasks = [n for n in names if n.startswith(TASK_PREFIX)]
    return tasks[0] if len(tasks) == 1 else ACCURACY


def accuracy_grid(
    fairs: dict[str | None, FairComparison], chosen: str = "loss"
) -> list[AccuracyCell]:
    """Every (model, task) cell in study order; empty when no run stores a task metric."""
    cells = []
    for model, fair in fairs.items():
        for t in fair.tasks:
            names = task_metrics(t.summary)
            metric = headline_metric(names, chosen)
            if metric is None:
                continue
            rows = task_rows(t.summary, names)
            best, tests = best_tests(rows, metric)
            cells.append(AccuracyCell(model, t.task, metric, rows, best, tests))
    return cells


def paper_order(score: dict[str, float]) -> bool | None:
    """Does ``score`` (placement -> score, higher is better) put all-linear strictly above
    mlp strictly above attention? Ties do not reproduce it. None when one of the three is
    missing."""
    if not set(PAPER_ORDER) <= set(score):
        return None
    a, b, c = (score[p] for p in PAPER_ORDER)
    return a > b > c


def cell_scores(cell: AccuracyCell) -> dict[str, float]:
    """The cell's trained placements' mean accuracy."""
    return {
        r.placement: e.mean
        for r in cell.rows
        if r.placement != "zero-shot" and (e := r.values[cell.metric]) is not None
    }
