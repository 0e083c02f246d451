"""The report's task-accuracy section: a table of every task metric with CIs over seeds,
and paired tests of the best placement by the chosen metric against the rest."""

from __future__ import annotations

from collections.abc import Callable

from loraplace.analysis import Summary
from loraplace.analysis.task_metrics import (
    ACCURACY,
    TASK_PREFIX,
    best_tests,
    task_metrics,
    task_rows,
    trade_rows,
)
from loraplace.report import fmt
from loraplace.report.escape import U
from loraplace.report.render import Document, Heading, Para, TableBlock
from loraplace.report.tables import DASH, Table, _ci, _raw, seeds_cell


def _label(metric: str) -> str:
    return "mean accuracy" if metric == ACCURACY else metric.removeprefix(TASK_PREFIX)


def accuracy_table(s: Summary, names: list[str]) -> Table:
    rows, raw = [], []
    for r in task_rows(s, names):
        n = max((e.n for e in r.values.values() if e is not None), default=0)
        rows.append([U(r.placement), seeds_cell(n)] + [_ci(r.values[m], fmt.pct_ci) for m in names])
        raw.append(
            {
                "placement": r.placement,
                "seeds": n,
                **{k: v for m in names for k, v in _raw(r.values[m], m).items()},
            }
        )
    return Table(
        "accuracy",
        "Task accuracy (%), mean ± 95 % CI over seeds",
        ["Placement", "Seeds"] + [f"{_label(m)} (%)" for m in names],
        rows,
        raw,
        notes=[
            [
                "exact_match: greedy generation equals the reference after normalising; "
                "choice: the most likely option is the reference (train/task_metrics.py)."
            ]
        ],
    )


def best_table(s: Summary, names: list[str], metric: str) -> tuple[str | None, Table]:
    best, tests = best_tests(task_rows(s, names), metric)
    rows, raw = [], []
    for b in tests:
        t = b.test
        diff = _ci(t.diff, lambda e: fmt.pct_ci(e))
        rows.append(
            [U(b.other), seeds_cell(t.n), diff, fmt.pvalue(t.p), fmt.pvalue(t.p_holm), U(b.verdict)]
        )
        raw.append(
            {
                "best": b.best,
                "other": b.other,
                "shared_seeds": t.n,
                **_raw(t.diff, "diff"),
                "p": t.p,
                "p_holm": t.p_holm,
                "verdict": b.verdict,
            }
        )
    title = f"Best by {_label(metric)} against each other placement (paired t, Holm)"
    cols = ["Other", "Shared seeds", "Best − other (points)", "p", "p (Holm)", "Verdict"]
    return best, Table("accuracy_tests", title, cols, rows, raw)


def trade_table(s: Summary, metric: str) -> Table | None:
    """Learning against forgetting on task scores (None without retain tasks)."""
    trades = trade_rows(s, metric)
    if not trades:
        return None
    rows, raw = [], []
    for t in trades:
        n = max((e.n for e in (t.learning, t.forgetting) if e is not None), default=0)
        rows.append(
            [
                U(t.placement),
                seeds_cell(n),
                _ci(t.learning, fmt.pct_ci),
                _ci(t.forgetting, fmt.pct_ci),
            ]
        )
        raw.append(
            {
                "placement": t.placement,
                "seeds": n,
                **_raw(t.learning, "learning"),
                **_raw(t.forgetting, "forgetting"),
            }
        )
    return Table(
        "task_forgetting",
        "Learning against forgetting on tasks (points), mean ± 95 % CI over seeds",
        [
            "Placement",
            "Seeds",
            f"Learning: {_label(metric)} gain",
            "Forgetting: retain accuracy drop",
        ],
        rows,
        raw,
        notes=[
            [
                "Both against the zero-shot model: learning is the gain on the chosen metric, "
                "forgetting the drop in the mean score of the retain tasks (eval.tasks with "
                "retain: true). Higher learning and lower forgetting are better."
            ]
        ],
    )


def add_task_section(
    doc: Document, table: Callable[[Table], TableBlock], s: Summary, metric: str
) -> None:
    """The section, when the study stored task metrics; metric: the one to rank by."""
    names = task_metrics(s)
    if not names:
        return
    metric = ACCURACY if metric == "loss" else metric
    doc.add(Heading(2, ["Task accuracy"]))
    best, tests_table = best_table(s, names, metric)
    if best is not None:
        e = next(r for r in task_rows(s, names) if r.placement == best).values[metric]
        assert e is not None
        doc.add(
            Para(
                [
                    U(best),
                    f" has the highest {_label(metric)}, {fmt.pct_ci(e)} % "
                    f"(mean ± 95 % CI over {e.n} seeds). Loss and accuracy may rank placements "
                    "differently: the table below is the one to read for the task.",
                ]
            )
        )
    doc.add(table(accuracy_table(s, names)))
    trades = trade_table(s, metric)
    if trades is not None:
        doc.add(table(trades))
    if tests_table.rows:
        doc.add(table(tests_table))
    else:
        doc.add(Para([DASH + " no other placement to test against."]))
