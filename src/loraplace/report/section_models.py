"""The Models section of a study across models: a results table per model, the
placement x model rank table with Kendall's W, and the cheap-proxy answer in one sentence."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from loraplace.analysis.accuracy_grid import PAPER_ORDER, paper_order
from loraplace.analysis.aggregate import Estimate
from loraplace.analysis.models import ModelAgreement, ModelComparison, ProxyCheck
from loraplace.analysis.task_metrics import task_rows
from loraplace.report import fmt
from loraplace.report import tables as tb
from loraplace.report.escape import U
from loraplace.report.render import Document, Heading, Para
from loraplace.report.section_accuracy import metric_label


def add_models_section(doc: Document, table: Callable, mc: ModelComparison) -> None:
    """Per-model results, then per task the models' agreement and the proxy answer."""
    doc.add(Heading(2, ["Models"]))
    doc.add(
        Para(
            [
                f"The study ran the same placements (given by roles) on {len(mc.models)} models: ",
                U(", ".join(mc.models)),
                ". Each model is compared on its own runs (its own budget matching and "
                "selection); the tables below give each model's results.",
            ]
        )
    )
    for i, m in enumerate(mc.models, 1):
        fair = mc.fairs[m]
        if not fair.tasks:
            doc.add(Para(["No finished trained runs on ", U(m), "."], "warning"))
            continue
        t = fair.tasks[0]
        res = tb.results_table(t.summary)
        on = f" on {t.task}" if t.task is not None else ""
        title = f"Model {m}{on}: {res.title[0].lower()}{res.title[1:]}"
        doc.add(table(dataclasses.replace(res, name=f"results_model{i}", title=title)))
    for i, a in enumerate(mc.agreements, 1):
        doc.add(Para(agreement_sentence(a)))
        doc.add(Para(proxy_sentence(a.proxy, a.task)))
        paper = paper_sentence(a)
        if paper:
            doc.add(Para(paper))
        doc.add(table(model_rank_table(mc, a, i)))


def _by(a: ModelAgreement) -> str:
    split = "test " if a.on_test else ""
    return "loss" if a.by == "loss" else f"{split}accuracy on {metric_label(a.by)}"


def paper_sentence(a: ModelAgreement) -> list:
    """Per model: does its ranking reproduce all-linear > mlp > attention (empty without
    those three placements)?"""
    verdicts = {
        m: paper_order({p: -a.ranks.rank(m, p) for p in a.ranks.placements}) for m in a.ranks.tasks
    }
    if any(v is None for v in verdicts.values()):
        return []
    yes = [m for m, v in verdicts.items() if v]
    no = [m for m, v in verdicts.items() if not v]
    on = [" on ", U(a.task)] if a.task is not None else []
    out: list = [f"All-linear > mlp > attention at equal budget (ranked by {_by(a)})", *on, ": "]
    if yes:
        out += [
            U(", ".join(yes)),
            " reproduces " if len(yes) == 1 else " reproduce ",
            U(" > ".join(PAPER_ORDER)),
        ]
    if no:
        out += ["; " if yes else "", U(", ".join(no)), " does not" if len(no) == 1 else " do not"]
    return [*out, "."]


def agreement_sentence(a: ModelAgreement) -> list:
    """Kendall's W of the models' placement rankings on one task."""
    on = [" on ", U(a.task)] if a.task is not None else []
    w = a.kendall
    if w is None:
        return [
            f"The models' placement rankings by {_by(a)}",
            *on,
            " admit no Kendall's W (every tie).",
        ]
    agree = "agree" if w.p < 0.05 else "show no significant agreement"
    return [
        f"Across the {w.m} models the placement rankings by {_by(a)}",
        *on,
        f" {agree}: Kendall's W = {w.w:.3f} (χ² = {w.chi2:.2f}, df = {w.df}, "
        f"p = {fmt.pvalue(w.p)}; the χ² approximation is rough with few placements or models).",
    ]


def proxy_sentence(p: ProxyCheck | None, task: str | None) -> list:
    """One sentence: did the smallest model rank the placements as the biggest did?"""
    on = [" on ", U(task)] if task is not None else []
    if p is None:
        return [
            "Cheap proxy",
            *on,
            ": not answerable, the models' parameter counts are unknown or equal.",
        ]
    if p.spearman is None:  # an order of ties in study order would read as a ranking
        return ["Cheap proxy", *on, ": not answerable, a model ties every placement."]
    stats = (
        f"Spearman ρ = {p.spearman:.2f}, Kendall τ = {p.kendall_tau:.2f}"
        if p.spearman is not None and p.kendall_tau is not None
        else "ρ and τ undefined: one model ties every placement"
    )
    small = [U(p.small), f" ({fmt.count(p.small_params)} parameters)"]
    big = [U(p.big), f" ({fmt.count(p.big_params)} parameters)"]
    if p.same_order:
        return [
            "Cheap proxy",
            *on,
            ": yes, the small model ",
            *small,
            " ranked the placements as the big model ",
            *big,
            " did (",
            U(" > ".join(p.big_order)),
            f"; {stats}).",
        ]
    return [
        "Cheap proxy",
        *on,
        ": no, the small model ",
        *small,
        " ranked the placements ",
        U(" > ".join(p.small_order)),
        ", the big model ",
        *big,
        " ",
        U(" > ".join(p.big_order)),
        f" ({stats}).",
    ]


def model_rank_table(mc: ModelComparison, a: ModelAgreement, number: int = 1) -> tb.Table:
    """Placement x model: headline loss ± CI and the placement's rank on each model."""
    cols = ["Placement", *a.ranks.tasks]
    rows: list[list[str]] = []
    raw: list[dict[str, object]] = []
    for p in a.ranks.placements:
        row: list[str] = [U(p)]
        rec: dict[str, object] = {"placement": p, "task": a.task}
        for m in a.ranks.tasks:
            t = next(t for t in mc.fairs[m].tasks if t.task == a.task)
            r = a.ranks.rank(m, p)
            e: Estimate | None
            if a.by == "loss":
                e = t.summary.get(p).loss
                row.append(f"{fmt.loss_ci(e)} (rank {r:g})")
            else:
                e = next(x for x in task_rows(t.summary, [a.by]) if x.placement == p).values[a.by]
                row.append(f"{fmt.pct_ci(e)} % (rank {r:g})" if e else f"— (rank {r:g})")
            rec[f"{m}_{a.by}"] = e.mean if e else None
            rec[f"{m}_rank"] = r
        rows.append(row)
        raw.append(rec)
    suffix = "" if number == 1 else f"_{number}"  # one table per task
    on = f" on {a.task}" if a.task is not None else ""
    return tb.Table(
        f"models{suffix}",
        f"Placement × model{on}: {_by(a)}{'' if a.by != 'loss' else ' (nats)'} and rank (1 = best)",
        [str(c) for c in cols],
        rows,
        raw,
    )
