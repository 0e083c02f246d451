"""What a finished study measured, per (model, task) cell: the side predictors are judged by.

A cell is one model on one task. In a study across models each model is its own cell
(its runs alone: its own selection, its own budget); with a grid, each placement is
represented by the grid point its selection chose (``analysis.selection``, on the
validation metric), judged on the test split when there is one (``headline_view``).

The headline metric of a cell, in this order: the task accuracy on the test split
(``test_accuracy``) when every chosen run has it, else the validation accuracy, else the
loss (``test_loss`` on a test split, else ``eval_loss``).

The study's cost of a cell is its runs' training time: ``train_time_s`` of finished runs,
and for runs stopped early (pruned by successive halving, which stores no time) the steps
they trained times the mean seconds per step of the cell's finished runs of the same
placement. Evaluation and loading are not counted, so a cost fraction errs against the
predictor.

Two predictors come from the study itself, at no cost of their own beyond its runs:

- the first rung of successive halving (``first_rung``): every grid point's validation
  loss at the first rung, mean over seeds, the best point per placement;
- the smaller model's measured ranking as a proxy for the larger one's (``proxy_cell``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from loraplace.analysis.budgeted import origins
from loraplace.analysis.read import TRAINED_KINDS, StudyData
from loraplace.analysis.selection import headline_view, select_settings
from loraplace.errors import UserError
from loraplace.metrics import ACCURACY, EVAL_LOSS, TEST_LOSS, TEST_PREFIX
from loraplace.predict.base import Candidate, Context, Prediction
from loraplace.study.halving import rung_steps

TEST_ACCURACY = TEST_PREFIX + ACCURACY
TOTAL_PARAMS = "total_params"  # the base model's parameter count, stored with every run


@dataclass(frozen=True)
class Measured:
    """A cell's measured placements: metric per seed, oriented by ``higher_better``."""

    metric: str
    higher_better: bool
    by_seed: dict[str, dict[int, float]]  # label -> seed -> value
    seconds: float  # the study's cost of the cell: its runs' training time
    presets: tuple[str, ...] = ()  # the labels that are presets or specs (not generated)

    def goodness(self, label: str, seed: int) -> float:
        v = self.by_seed[label][seed]
        return v if self.higher_better else -v

    def mean(self, label: str) -> float:
        vals = self.by_seed[label].values()
        return sum(vals) / len(vals)

    def _best_of(self, labels) -> str:
        sign = 1.0 if self.higher_better else -1.0
        return min(labels, key=lambda k: (-sign * self.mean(k), k))

    @property
    def best(self) -> str:
        return self._best_of(self.by_seed)

    @property
    def best_preset(self) -> str | None:
        """The best measured preset (or spec), None when every placement is generated."""
        shown = [p for p in self.presets if p in self.by_seed]
        return self._best_of(shown) if shown else None


def headline_metric(runs) -> tuple[str, str, bool]:
    """(name shown, key read, higher better) of the chosen runs (module docstring)."""
    if runs and all(TEST_ACCURACY in r.metrics for r in runs):
        return TEST_ACCURACY, TEST_ACCURACY, True
    if runs and all(ACCURACY in r.metrics for r in runs):
        return ACCURACY, ACCURACY, True
    on_test = any("val_loss" in r.metrics for r in runs)  # headline_view swapped in test
    return (TEST_LOSS if on_test else EVAL_LOSS), EVAL_LOSS, False


def measured(view: StudyData, every_run: StudyData | None = None) -> Measured:
    """The measured placements of one cell: ``view`` its chosen runs (or the cell itself
    without a grid), ``every_run`` all its runs, pruned ones too, for the cost."""
    done = [r for r in view.runs if r.kind == "lora" and r.done]
    name, key, higher = headline_metric(done)
    by_seed: dict[str, dict[int, float]] = {}
    for r in done:
        if key in r.metrics:
            by_seed.setdefault(r.placement, {})[r.seed] = float(r.metrics[key])
    generated = origins(view.config)
    presets = tuple(p for p in by_seed if p not in generated)
    return Measured(name, higher, by_seed, cell_seconds(every_run or view), presets)


def _steps_trained(run) -> int:
    """Optimizer steps a run trained: its train-loss curve's last step."""
    curve = run.curves.get("train_loss") or []
    return int(curve[-1][0]) if curve else 0


def step_seconds(study: StudyData) -> dict[str, float]:
    """placement (without grid point) -> mean training seconds per step of finished runs."""
    per: dict[str, list[float]] = {}
    for r in study.runs:
        steps = r.metrics.get("steps") or _steps_trained(r)
        if r.kind in TRAINED_KINDS and r.done and steps and "train_time_s" in r.metrics:
            per.setdefault(r.placement_base, []).append(float(r.metrics["train_time_s"]) / steps)
    return {k: sum(v) / len(v) for k, v in per.items()}


def cell_seconds(study: StudyData) -> float:
    """Training seconds of a cell's runs, those stopped early estimated (module docstring)."""
    rate = step_seconds(study)
    fallback = sum(rate.values()) / len(rate) if rate else 0.0
    total = 0.0
    for r in study.runs:
        if r.done and "train_time_s" in r.metrics:
            total += float(r.metrics["train_time_s"])
        elif r.kind in TRAINED_KINDS:
            total += _steps_trained(r) * rate.get(r.placement_base, fallback)
    return total


def first_rung(study: StudyData) -> Prediction | None:
    """The first rung of the study's successive halving as a prediction, or None.

    Score of a placement: minus the lowest mean (over seeds) validation loss of its grid
    points at the rung's step. Cost: every trained run's rung steps at its placement's
    seconds per step.
    """
    select = study.config.get("select") or {}
    runs = [r for r in study.runs if r.kind in TRAINED_KINDS]
    if select.get("prune") != "halving" or not runs:
        return None
    total = int((runs[0].spec.get("train") or {}).get("steps") or 0)
    rungs = rung_steps(total, int(select.get("rungs", 2)), int(select.get("reduction", 3)))
    if not rungs:
        return None
    step = rungs[0]
    losses: dict[str, dict[str, list[float]]] = {}  # placement -> grid point -> seeds
    for r in runs:
        at = dict(r.curves.get(EVAL_LOSS) or []).get(step)
        if at is not None and math.isfinite(at):
            losses.setdefault(r.placement_base, {}).setdefault(r.placement, []).append(at)
    if len(losses) < 2:
        return None
    best = {p: min(sum(v) / len(v) for v in pts.values()) for p, pts in losses.items()}
    rate = step_seconds(study)
    seconds = sum(step * rate.get(r.placement_base, 0.0) for r in runs)
    detail = {"source": "the study's first halving rung", "step": step, EVAL_LOSS: best}
    return Prediction("short-runs", {p: -v for p, v in best.items()}, seconds, detail)


@dataclass
class Cell:
    """One (model, task) of a study: what was measured, and what predictors rank."""

    model: str  # the model's label
    task: str  # the task's label (its dataset when the study has one)
    runs: StudyData  # every run of the cell (pruned ones too)
    measured: Measured
    context: Context
    candidates: list[Candidate]
    params: int | None  # the base model's parameters, when the runs store it

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.task)


def _view(study: StudyData, task: str | None) -> StudyData:
    """The cell's chosen runs: per placement the grid point selection picks, on test."""
    by = (study.config.get("select") or {}).get("by", EVAL_LOSS)
    if not study.config.get("select"):
        return study.for_task(task)
    chosen = [s for s in select_settings(study, by) if s.task == task]
    return headline_view(study, chosen, task) if chosen else study.for_task(task)


def _candidates(view: StudyData, label: str) -> list[Candidate]:
    cands: dict[str, Candidate] = {}
    for r in view.runs:
        if r.kind == "lora" and r.done and r.placement not in cands:
            cands[r.placement] = Candidate(
                r.placement, tuple(r.modules), bool(r.spec.get("use_rslora"))
            )
    if len(cands) < 2:
        raise UserError(
            f"{label} has {len(cands)} finished placement(s): validation compares rankings "
            "and needs at least 2"
        )
    return list(cands.values())


def _cell(study: StudyData, model: str, task: str | None, options, seed: int) -> Cell:
    runs = study.for_task(task)
    view = _view(study, task)
    done = [r for r in view.runs if r.kind == "lora" and r.done]
    template = dict(done[0].spec)
    label = task or str(template["dataset"])
    several = len({r.model for r in study.runs}) > 1
    where = f"study {study.name!r}" + (f", model {model}" if several else "") + f", {label}"
    cands = _candidates(view, where)
    budget = study.budget if len(study.models()) == 1 and study.budget else None
    ctx = Context(
        model=str(template["model"]),
        dataset=str(template["dataset"]),
        budget=int(budget or max(c.params for c in cands)),
        template=template,
        seed=seed,
        options=dict(options or {}),
    )
    counts = [r.metrics[TOTAL_PARAMS] for r in runs.runs if TOTAL_PARAMS in r.metrics]
    params = int(max(counts)) if counts else None
    return Cell(model, label, runs, measured(view, runs), ctx, cands, params)


def study_cells(
    data: StudyData, options: dict[str, Any] | None = None, seed: int = 0
) -> list[Cell]:
    """Every (model, task) of a study with finished LoRA runs, model by model.

    A task with baseline runs only has nothing to rank and is left out; a study with no
    finished LoRA run, or a cell with fewer than 2 placements, is one UserError.
    """
    if not any(r.kind == "lora" and r.done for r in data.runs):
        raise UserError(
            f"study {data.name!r} has no finished LoRA run: run it to the end first "
            "(`loraplace run` resumes it)"
        )
    cells = []
    for model in data.models():
        sub = data.for_model(model)
        for task in sub.tasks():
            if any(r.kind == "lora" and r.done for r in sub.for_task(task).runs):
                cells.append(_cell(sub, model, task, options, seed))
    return cells


def proxy_cell(cells: list[Cell], cell: Cell) -> Prediction | None:
    """The smallest model's measured ranking on the same task, as a prediction for a
    larger model's cell (None for the smallest model itself, or without sizes).

    Cost: the small model's training seconds on the task (the large model's are the
    study's side of the fraction).
    """
    same = [c for c in cells if c.task == cell.task and c.params is not None]
    if cell.params is None or len(same) < 2:
        return None
    small = min(same, key=lambda c: (c.params, c.model))
    if small is cell or small.params == cell.params:
        return None
    m = small.measured
    scores = {p: m.mean(p) if m.higher_better else -m.mean(p) for p in m.by_seed}
    detail = {"source": f"measured ranking of {small.model}", "proxy_model": small.model}
    return Prediction("proxy", scores, m.seconds, detail)
