"""Task accuracy over seeds: per-placement estimates and paired tests on any stored metric.

Runs store each task's accuracy as ``task:<name>`` and their mean as ``accuracy``
(train/task_metrics.py). Here they are aggregated exactly like loss: the mean over seeds with a
95 % t interval (``aggregate.estimate``), and paired t-tests over shared seeds,
Holm-corrected (``stats.paired_test``, ``stats.holm``). Higher is better.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from loraplace.analysis.aggregate import Estimate, Summary, estimate
from loraplace.analysis.stats import ALPHA, PairedTest, holm, paired_test
from loraplace.errors import UserError, closest
from loraplace.metrics import ACCURACY, EVAL_LOSS, RETAIN_ACCURACY, TASK_PREFIX


@dataclass(frozen=True)
class TaskRow:
    """One placement (or the zero-shot model): each task metric over its done seeds."""

    placement: str
    values: dict[str, Estimate | None]  # metric name -> estimate over seeds
    by_seed: dict[str, dict[int, float]]  # metric name -> seed -> value


def task_metrics(s: Summary) -> list[str]:
    """The task metrics the study stored: task:<name> in study order, then accuracy."""
    names: list[str] = []
    for r in s.study.runs:
        for k in r.metrics:
            if k.startswith(TASK_PREFIX) and k not in names:
                names.append(k)
    return names + [ACCURACY] if names else []


def resolve_metric(s: Summary, metric: str) -> str:
    """``loss`` or a stored task metric (``accuracy``, ``task:<name>`` or ``<name>``)."""
    if metric in ("loss", EVAL_LOSS):
        return "loss"
    names = task_metrics(s)
    for cand in (metric, TASK_PREFIX + metric):
        if cand in names:
            return cand
    have = ", ".join(["loss", *names])
    raise UserError(
        f"no run of study {s.study.name!r} stores metric {metric!r}{closest(metric, names)}: "
        f"choose one of {have} (task metrics come from eval.tasks)"
    )


def task_rows(s: Summary, names: list[str]) -> list[TaskRow]:
    """Zero-shot first (when the study has it), then every trained placement."""
    groups: list[tuple[str, list]] = []
    zs = [r for r in s.study.runs if r.kind == "zero-shot" and r.done]
    if zs:
        groups.append(("zero-shot", zs))
    groups += [(p.placement, p.runs) for p in s.placements]
    rows = []
    for label, runs in groups:
        by_seed = {n: {r.seed: r.metrics[n] for r in runs if n in r.metrics} for n in names}
        rows.append(TaskRow(label, {n: estimate(v.values()) for n, v in by_seed.items()}, by_seed))
    return rows


def _paired(row: TaskRow, metric: str, seeds: dict[int, float]) -> dict[int, float]:
    """The row's values by seed; the zero-shot model's one value stands for every seed
    (no seed changes the base model's greedy answers)."""
    values = row.by_seed[metric]
    if row.placement == "zero-shot" and len(values) == 1:
        (value,) = values.values()
        return dict.fromkeys(seeds, value)
    return values


@dataclass(frozen=True)
class BestTest:
    """The best placement by a metric against another, paired over shared seeds."""

    best: str
    other: str
    test: PairedTest  # diff = best - other (positive: best is higher)

    @property
    def verdict(self) -> str:
        t = self.test
        if t.p_holm is None:
            return "untestable"
        return "within noise" if t.p_holm >= ALPHA else f"{self.best} higher"


def best_tests(rows: list[TaskRow], metric: str) -> tuple[str | None, list[BestTest]]:
    """The trained placement with the highest mean, tested against every other row."""
    trained = [r for r in rows if r.placement != "zero-shot" and r.values.get(metric)]
    if not trained:
        return None, []
    best = max(trained, key=lambda r: r.values[metric].mean)  # type: ignore[union-attr]
    others = [r for r in rows if r is not best and r.values.get(metric)]
    mine = best.by_seed[metric]
    tests = [
        paired_test(best.placement, mine, r.placement, _paired(r, metric, mine)) for r in others
    ]
    adjusted = holm([t.p for t in tests])
    out = [
        BestTest(best.placement, r.placement, dataclasses.replace(t, p_holm=p))
        for r, t, p in zip(others, tests, adjusted, strict=True)
    ]
    return best.placement, out


@dataclass(frozen=True)
class TradeRow:
    """One placement's learning against its forgetting, on task scores, over seeds."""

    placement: str
    learning: Estimate | None  # the chosen metric minus zero-shot's (positive: learned)
    forgetting: Estimate | None  # zero-shot's retain accuracy minus the run's (positive: lost)


def trade_rows(s: Summary, metric: str) -> list[TradeRow]:
    """Per placement, the gain on ``metric`` and the loss on the retain tasks, both against
    the zero-shot model; empty without retain tasks or a zero-shot run."""
    zs = [r for r in s.study.runs if r.kind == "zero-shot" and r.done]
    if not any(RETAIN_ACCURACY in r.metrics for r in zs):
        return []

    def zero(name: str) -> float | None:
        values = [r.metrics[name] for r in zs if name in r.metrics]
        return sum(values) / len(values) if values else None

    z_learn, z_keep = zero(metric), zero(RETAIN_ACCURACY)
    rows = []
    for p in s.placements:
        learn = [
            r.metrics[metric] - z_learn
            for r in p.runs
            if z_learn is not None and metric in r.metrics
        ]
        lost = [
            z_keep - r.metrics[RETAIN_ACCURACY]
            for r in p.runs
            if z_keep is not None and RETAIN_ACCURACY in r.metrics
        ]
        rows.append(TradeRow(p.placement, estimate(learn), estimate(lost)))
    return rows
