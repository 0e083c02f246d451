"""The Equal budget section of a study across models: each model's own budget (the same
budget text resolves to a different count on each model) and what each placement spent
of it on each model."""

from __future__ import annotations

from loraplace.analysis.models import ModelComparison
from loraplace.report import fmt
from loraplace.report.escape import U
from loraplace.report.render import Heading, Para
from loraplace.report.section_context import SectionContext
from loraplace.report.tables import DASH, Table, seeds_cell


def model_budget(mc: ModelComparison, model: str) -> int | None:
    """The model's budget in parameters; the first model's is the study's (stores written
    before per-model budgets hold that one only)."""
    study = mc.study
    if model in study.model_budgets:
        return study.model_budgets[model]
    return study.budget if model == mc.models[0] else None


def budget_models_table(mc: ModelComparison) -> Table:
    cols = ["Model", "Budget", "Placement", "Trainable params", "Δ vs budget", "Seeds"]
    rows: list[list] = []
    raw: list[dict[str, object]] = []
    for m in mc.models:
        budget = model_budget(mc, m)
        fair = mc.fairs[m]
        placements = fair.tasks[0].summary.placements if fair.tasks else []
        for p in (p for p in placements if p.kind == "lora"):
            n = p.trainable_params
            dev = 100 * (n - budget) / budget if budget and n is not None else None
            rows.append(
                [
                    U(m),
                    fmt.count(budget) if budget is not None else "not stored",
                    U(p.placement),
                    fmt.count(n) if n is not None else DASH,
                    f"{fmt.signed_pct(dev)} %" if dev is not None else DASH,
                    seeds_cell(p.loss.n),
                ]
            )
            raw.append(
                {
                    "model": m,
                    "budget": budget,
                    "placement": p.placement,
                    "trainable_params": n,
                    "delta_pct": dev,
                    "seeds": p.loss.n,
                }
            )
    return Table(
        "budget_models",
        "Each model's budget and what each placement spent of it",
        cols,
        rows,
        raw,
        align="lrlrrr",
    )


def add_budget_models_section(r: SectionContext) -> None:
    """Equal budget across models (the single-model section reads one budget only)."""
    mc = r.models
    if mc is None or mc.study.config.get("budget") is None:
        return
    cfg = mc.study.config
    r.doc.add(Heading(2, ["Equal budget"]))
    counts: list = []
    for i, m in enumerate(mc.models):
        b = model_budget(mc, m)
        counts += [", " if i else "", U(m), " ", fmt.count(b) if b is not None else "not stored"]
    per_role = (
        " Each role's share of the budget is matched on its own (budget_per_role)."
        if cfg.get("budget_per_role")
        else ""
    )
    r.doc.add(
        Para(
            [
                "The budget (",
                U(str(cfg["budget"])),
                ") is resolved on each model on its own, in trainable parameters: ",
                *counts,
                ". On each model every preset or spec takes the rank that comes closest "
                f"without exceeding that model's budget.{per_role}",
            ]
        )
    )
    r.doc.add(r.table(budget_models_table(mc)))
