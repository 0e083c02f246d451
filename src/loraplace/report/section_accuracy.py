"""The accuracy headline of a study across models or tasks: placement x (model, task) test
accuracy with 95 % CIs over seeds, the zero-shot model as a row, and per (model, task) the
best placement by accuracy tested against the others (paired over seeds, Holm)."""

from __future__ import annotations

from loraplace.analysis.accuracy_grid import AccuracyCell, accuracy_grid, cell_scores
from loraplace.analysis.fair import FairComparison
from loraplace.analysis.task_metrics import BestTest
from loraplace.metrics import ACCURACY, TASK_PREFIX
from loraplace.report import fmt
from loraplace.report.escape import U
from loraplace.report.render import Bullets, Heading, Para
from loraplace.report.section_context import SectionContext
from loraplace.report.tables import DASH, Table, _ci, _raw, seeds_cell


def metric_label(metric: str) -> str:
    return "mean accuracy over tasks" if metric == ACCURACY else metric.removeprefix(TASK_PREFIX)


def _column(c: AccuracyCell) -> str:
    return " · ".join(str(x) for x in (c.model, c.task) if x is not None)


def grid_table(cells: list[AccuracyCell], on_test: bool) -> Table:
    """Rows: zero-shot and the placements; columns: (model, task); mean ± CI in %."""
    labels = list(dict.fromkeys(r.placement for c in cells for r in c.rows))
    rows: list[list] = []
    raw: list[dict[str, object]] = []
    for label in labels:
        row: list = [U(label)]
        rec: dict[str, object] = {"placement": label}
        for c in cells:
            r = next((r for r in c.rows if r.placement == label), None)
            e = r.values[c.metric] if r is not None else None
            cell = _ci(e, fmt.pct_ci)
            n = "" if e is None else "1 eval" if label == "zero-shot" else seeds_cell(e.n)
            row.append(f"{cell} ({n})" if n else cell)
            for k, v in _raw(e, _column(c)).items():
                rec[k] = v
            rec[f"{_column(c)}_seeds"] = e.n if e is not None else 0
        rows.append(row)
        raw.append(rec)
    split = "test" if on_test else "validation"
    metrics = ", ".join(dict.fromkeys(metric_label(c.metric) for c in cells))
    return Table(
        "accuracy_grid",
        f"Placement × (model, task): {split} accuracy (%) on {metrics}, mean ± 95 % CI (seeds)",
        ["Placement", *[_column(c) for c in cells]],
        rows,
        raw,
        notes=[
            [
                "Each model and task at its own selected setting per placement; seeds in "
                "brackets. The zero-shot model is one evaluation (its greedy answers do not "
                "depend on a seed), so it has no interval."
            ]
        ],
    )


def best_sentence(c: AccuracyCell) -> list:
    """Which placement is best on one (model, task) and what the tests say."""
    where = _column(c) or "the study"
    if c.best is None:
        return [U(where), ": no finished placement stores ", U(metric_label(c.metric)), "."]
    e = next(r for r in c.rows if r.placement == c.best).values[c.metric]
    assert e is not None
    scores = cell_scores(c)
    if len(scores) > 1 and len(set(scores.values())) == 1:
        return [U(where), f": every placement scores {fmt.pct_ci(e)} %, so none is best."]
    parts: list = [
        U(where),
        ": ",
        U(c.best),
        f" is best by {metric_label(c.metric)} ({fmt.pct_ci(e)} %); ",
    ]
    sig = [b for b in c.tests if b.test.p_holm is not None and b.test.p_holm < 0.05]
    untestable = [b for b in c.tests if b.test.p_holm is None]
    rest = [b for b in c.tests if b not in sig and b not in untestable]
    if sig:
        parts += ["significantly above ", *_others(sig)]
    if sig and rest:
        parts.append("; ")
    if rest:
        parts += ["not significantly above ", *_others(rest)]
    if untestable:
        parts += ["; " if sig or rest else "", "untestable against ", *_others(untestable)]
    if not c.tests:
        parts.append("no other placement to test against")
    return [*parts, "."]


def _others(tests: list[BestTest]) -> list:
    out: list = []
    for i, b in enumerate(tests):
        if i:
            out.append(", ")
        p = "" if b.test.p_holm is None else f" (Holm p = {fmt.pvalue(b.test.p_holm)})"
        out += [U(b.other), p]
    return out


def _cells(r: SectionContext) -> tuple[dict[str | None, FairComparison], list[AccuracyCell]]:
    """The grid's cells: only when task metrics meet several models or several tasks."""
    fairs: dict[str | None, FairComparison] = {}
    if r.models is not None:
        fairs = {m: r.models.fairs[m] for m in r.models.models}
    elif r.fair is not None and len(r.fair.tasks) > 1:
        fairs = {None: r.fair}
    return fairs, accuracy_grid(fairs, r.metric) if fairs else []


def accuracy_pointer(r: SectionContext) -> list:
    """For the preamble: where the accuracy of every model and task is (empty without)."""
    if not _cells(r)[1]:
        return []
    return [
        "The headline, task accuracy on every model and task with 95 % CIs, is the "
        "Accuracy across models and tasks section."
    ]


def add_accuracy_section(r: SectionContext) -> None:
    """The headline when task metrics meet several models or several tasks."""
    fairs, cells = _cells(r)
    if not cells:
        return
    on_test = all(f.on_test for f in fairs.values())
    r.doc.add(Heading(2, ["Accuracy across models and tasks"]))
    r.doc.add(
        Para(
            [
                f"The headline: task accuracy on the {'test' if on_test else 'validation'} "
                "split, per placement, model and task, each placement at the setting "
                "selected for it on validation. Best per model and task (against each other "
                "row, paired t over shared seeds, Holm-corrected within the model and task):"
            ]
        )
    )
    r.doc.add(Bullets([best_sentence(c) for c in cells]))
    r.doc.add(r.table(grid_table(cells, on_test)))
    if any(not c.tests for c in cells):
        r.doc.add(Para([DASH + " a cell with one placement has nothing to test against."]))
