"""Report sections for fair comparisons: selection, tasks, equivalence and seed planning.

Every sentence is built from ``analysis.fair.FairComparison`` and carries the numbers
of the tables beside it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loraplace.analysis.fair import FairComparison, SeedPlan, TaskComparison
from loraplace.analysis.power import MAX_SEEDS
from loraplace.metrics import EVAL_LOSS
from loraplace.report import fmt
from loraplace.report.escape import U
from loraplace.report.grid_figure import loss_vs_lr_figure
from loraplace.report.render import Bullets, Document, Heading, Para
from loraplace.report.tables import DASH, Table, seeds_cell


def setting_text(setting: dict[str, Any]) -> str:
    """{"lr": 0.001, "rank": 8} -> "lr 0.001, rank 8" (— for no setting)."""
    if not setting:
        return DASH
    return ", ".join(
        f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in setting.items()
    )


def _task(t: str | None) -> str:
    return U(t) if t is not None else "—"


def selection_table(fair: FairComparison) -> Table:
    by = fair.select_by or EVAL_LOSS
    where = "test" if fair.on_test else "validation (no test split)"
    cols = ["Task", "Placement", "Selected setting", f"Validation {by}", f"Headline loss ({where})"]
    rows, raw = [], []
    for sel in fair.selections:
        t = fair.task(sel.task)
        p = next((x for x in t.summary.placements if x.placement == sel.placement), None)
        rows.append(
            [
                _task(sel.task),
                U(sel.placement),
                U(setting_text(sel.chosen.setting)),
                fmt.loss_ci(sel.chosen.score),
                fmt.loss_ci(p.loss) if p else DASH,
                seeds_cell(sel.chosen.score.n),
            ]
        )
        raw.append(
            {
                "task": sel.task,
                "placement": sel.placement,
                "label": sel.chosen.label,
                **{f"setting_{k}": v for k, v in sel.chosen.setting.items()},
                "val_mean": sel.chosen.score.mean,
                "headline_loss_mean": p.loss.mean if p else None,
                "seeds": sel.chosen.score.n,
            }
        )
    return Table(
        "selection",
        "Setting selected per placement on validation",
        cols + ["Seeds"],
        rows,
        raw,
        align="lllrrr",
    )


def task_table(fair: FairComparison) -> Table:
    """The placement x task table: loss ± CI and the placement's rank on each task."""
    assert fair.ranks is not None
    ranks = fair.ranks
    cols = ["Placement", *ranks.tasks]
    rows: list[list[str]] = []
    raw: list[dict[str, object]] = []
    for p in ranks.placements:
        row: list[str] = [U(p)]
        rec: dict[str, object] = {"placement": p}
        for task in ranks.tasks:
            s = next(t for t in fair.tasks if str(t.task) == task).summary.get(p)
            r = ranks.rank(task, p)
            row.append(f"{fmt.loss_ci(s.loss)} (rank {r:g})")
            rec[f"{task}_loss"] = s.loss.mean
            rec[f"{task}_rank"] = r
        rows.append(row)
        raw.append(rec)
    where = "test" if fair.on_test else "eval"
    return Table(
        "tasks", f"Placement × task: {where} loss (nats) and rank (1 = best)", cols, rows, raw
    )


def verdict_table(fair: FairComparison) -> Table:
    cols = ["Task", "A", "B", "A − B (nats)", "Holm p (t)", "Holm p (TOST)", "Verdict", "t-test"]
    rows: list[list[str]] = []
    raw: list[dict[str, object]] = []
    for t in fair.tasks:
        for v in t.verdicts:
            d = v.test.diff
            rows.append(
                [
                    _task(t.task),
                    U(v.a),
                    U(v.b),
                    fmt.signed_loss(d.mean) if d else DASH,
                    fmt.pvalue(v.test.p_holm),
                    fmt.pvalue(v.p_tost_holm),
                    U(v.word),
                    U(v.test.verdict),
                ]
            )
            raw.append(
                {
                    "task": t.task,
                    "a": v.a,
                    "b": v.b,
                    "diff": d.mean if d else None,
                    "p_holm": v.test.p_holm,
                    "p_tost_holm": v.p_tost_holm,
                    "margin": v.margin,
                    "verdict": v.word,
                    "t_test_verdict": v.test.verdict,
                }
            )
    return Table(
        "verdicts",
        f"Pairwise verdicts with an equivalence margin of ±{fair.margin:g} nats",
        cols,
        rows,
        raw,
        align="lllrrrll",
    )


def edge_sentence(fair: FairComparison) -> list:
    """Selections at the lowest or highest lr of their grid: the optimum may lie beyond it."""
    edges = []
    for sel in fair.selections:
        lrs = sorted({p.setting["lr"] for p in sel.points if "lr" in p.setting})
        lr = sel.chosen.setting.get("lr")
        if len(lrs) > 1 and lr in (lrs[0], lrs[-1]):
            side = "highest" if lr == lrs[-1] else "lowest"
            edges.append((sel, side))
    if not edges:
        return []
    parts: list = [
        f"{len(edges)} of {len(fair.selections)} selections sit at the edge of the lr grid ("
    ]
    for i, (sel, side) in enumerate(edges):
        parts += [U(f"{sel.task}/{sel.placement}" if sel.task else sel.placement), f": {side}"]
        parts.append(", " if i < len(edges) - 1 else "")
    parts.append("); the best lr may lie beyond it: extend the grid that way.")
    return parts


def _ranking_sentence(t: TaskComparison) -> list:
    if len(t.rankings) < 2:
        return []
    name = [" on ", U(t.task)] if t.task is not None else []
    if not t.ranking_flips:
        order = " < ".join(next(iter(t.rankings.values())))
        return ["The ranking of placements holds at every grid point", *name, ": ", U(order), "."]
    parts: list = ["The ranking of placements flips between grid points", *name, ": "]
    for i, (key, ranked) in enumerate(t.rankings.items()):
        parts += [U(setting_text(dict(key))), ": ", U(" < ".join(ranked))]
        parts.append("; " if i < len(t.rankings) - 1 else ".")
    bests = {order[0] for order in t.rankings.values()}
    if len(bests) > 1:
        parts.append(" The best placement depends on the grid point.")
    return parts


def seed_plan_sentence(plans: list[SeedPlan], margin: float | None) -> list:
    """The seed-planning sentence: the pair that needs the most seeds to resolve."""
    if not plans:
        return []
    have = max(p.seeds for p in plans)
    need = [p for p in plans if p.for_difference is not None]
    parts: list = [
        "Seed planning (80 % power, two-sided α = 0.05, from the observed seed spread): "
    ]
    if need:
        worst = max(need, key=lambda p: p.for_difference)  # type: ignore[arg-type, return-value]
        parts += [
            f"resolving every observed difference needs {worst.for_difference} seeds "
            f"(the hardest pair, ",
            U(worst.a),
            " vs ",
            U(worst.b),
            f": {fmt.signed_loss(worst.diff)} nats, seed sd {fmt.loss(worst.sd)}); "
            f"the study has {have}.",
        ]
    else:
        parts.append("no observed difference is large enough to resolve with any seed budget.")
    if margin:
        m = [p for p in plans if p.for_margin is not None]
        if m:
            worst = max(m, key=lambda p: p.for_margin)  # type: ignore[arg-type, return-value]
            parts.append(
                f" Showing equivalence within ±{margin:g} nats needs up to "
                f"{worst.for_margin} seeds."
            )
    return parts


def add_comparison_sections(
    doc: Document,
    table: Callable,
    figure: Callable,
    fair: FairComparison,
    fig_dir: Path,
) -> None:
    """Selection, Tasks and Equivalence sections (each only where the study has it)."""
    if fair.selections:
        doc.add(Heading(2, ["Selection on validation, numbers on test"]))
        where = (
            "The headline numbers (Results and every section after it) come from the "
            "separate test split, which selection never reads."
            if fair.on_test
            else "The study holds out no test split, so the headline numbers are validation "
            "numbers: read them as optimistic."
        )
        doc.add(
            Para(
                [
                    f"Every placement was trained at each grid point; for each placement "
                    f"the setting with the best mean validation {fair.select_by} over seeds was "
                    "selected. " + where
                ]
            )
        )
        doc.add(table(selection_table(fair)))
        edge = edge_sentence(fair)
        if edge:
            doc.add(Para(edge, "warning"))
        figure(loss_vs_lr_figure(fair, fair.study, fig_dir))
        for t in fair.tasks:
            parts = _ranking_sentence(t)
            if parts:
                doc.add(Para(parts))
    if fair.ranks is not None:
        add_tasks_comparison(doc, table, fair)
    if fair.margin:
        doc.add(Heading(2, ["Equivalence"]))
        doc.add(
            Para(
                [
                    "A t-test that finds no difference is not evidence of equivalence. With a "
                    f"margin of ±{fair.margin:g} nats, each pair is called better (Holm-adjusted "
                    "paired t-test), equivalent (two one-sided tests, Holm-adjusted: the "
                    "difference lies within the margin) or inconclusive (neither)."
                ]
            )
        )
        doc.add(table(verdict_table(fair)))
    plans = False
    for t in fair.tasks:
        parts = seed_plan_sentence(t.seed_plans, fair.margin)
        if parts:
            plans = True
            doc.add(Para(([U(t.task), ": "] if t.task is not None else []) + parts))
    if plans:
        doc.add(table(seed_plan_table(fair)))


def seed_plan_table(fair: FairComparison) -> Table:
    cols = ["Task", "A", "B", "Seeds", "A − B (nats)", "Seed sd (nats)", "Seeds needed"]
    if fair.margin:
        cols.append(f"Seeds for ±{fair.margin:g}")
    rows, raw = [], []
    for t in fair.tasks:
        for p in t.seed_plans:
            row = [_task(t.task), U(p.a), U(p.b), seeds_cell(p.seeds)]
            row += [fmt.signed_loss(p.diff), fmt.loss(p.sd), _needed(p.for_difference)]
            if fair.margin:  # a difference outside the margin can never be shown equivalent
                row.append(_needed(p.for_margin) if abs(p.diff) < fair.margin else DASH)
            rows.append(row)
            raw.append({"task": t.task, **dataclasses.asdict(p)})
    return Table(
        "seed_plan",
        "Seeds that would resolve each difference at 80 % power (paired t-test, α = 0.05)",
        cols,
        rows,
        raw,
        align="lll" + "r" * (len(cols) - 3),
    )


def _needed(n: int | None) -> str:
    return str(n) if n is not None else f"> {MAX_SEEDS}"


def add_tasks_comparison(doc: Document, table: Callable, fair: FairComparison) -> None:
    assert fair.ranks is not None
    doc.add(Heading(2, ["Tasks"]))
    doc.add(Para(task_dependence_sentence(fair)))
    doc.add(table(task_table(fair)))


def task_dependence_sentence(fair: FairComparison) -> list:
    """Says plainly whether the best placement depends on the task, with Kendall's W."""
    assert fair.ranks is not None
    ranks = fair.ranks
    parts: list = []
    if ranks.best_depends_on_task:
        parts.append("The best placement depends on the task: ")
        for i, task in enumerate(ranks.tasks):
            parts += [U(" = ".join(ranks.best(task))), " on ", U(task)]
            parts.append("; " if i < len(ranks.tasks) - 1 else ".")
    else:
        common = set(ranks.placements)
        for task in ranks.tasks:
            common &= set(ranks.best(task))
        parts += [
            "The best placement is the same on every task: ",
            U(" = ".join(sorted(common))),
            ".",
        ]
    w = fair.kendall
    if w is not None:
        agree = "agree" if w.p < 0.05 else "show no significant agreement"
        parts.append(
            f" Across the {w.m} tasks the placement rankings {agree}: Kendall's W = {w.w:.3f} "
            f"(χ² = {w.chi2:.2f}, df = {w.df}, p = {fmt.pvalue(w.p)}; the χ² approximation is "
            "rough with few placements or tasks)."
        )
    return parts


def guideline_notes(fair: FairComparison) -> list:
    """Blocks for the Practical guidelines: task dependence and the verdict words."""
    out: list = []
    if fair.ranks is not None:
        out.append(Para(task_dependence_sentence(fair)))
    items = []
    for t in fair.tasks:
        for v in t.verdicts:
            lead = [U(t.task), ": "] if t.task is not None else []
            items.append([*lead, U(v.a), " vs ", U(v.b), ": ", U(v.word)])
    if items:
        out.append(Para([f"Pairwise verdicts (margin ±{fair.margin:g} nats):"]))
        out.append(Bullets(items))
    return out


def verdict_word(fair: FairComparison, test) -> str | None:
    """The headline task's verdict word for the pair of ``test`` (None without a margin)."""
    if not fair.tasks:
        return None
    for v in fair.tasks[0].verdicts:
        if {v.a, v.b} == {test.a, test.b}:
            return v.word
    return None
