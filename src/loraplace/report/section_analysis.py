"""The analysis sections: trade-off and efficiency, guidelines, importance, loss and
perplexity consistency, learning curves."""

from __future__ import annotations

from loraplace.analysis import Consistency, consistency, efficiency, fronts, guidelines, importance
from loraplace.report import figures as figs
from loraplace.report import fmt
from loraplace.report import section_tables as st
from loraplace.report.comparisons import guideline_notes, verdict_word
from loraplace.report.escape import U
from loraplace.report.render import Bullets, Heading, Para
from loraplace.report.section_context import SectionContext
from loraplace.report.section_results import verdict


def add_tradeoff(r: SectionContext) -> None:
    """Pareto fronts and efficiency per parameter and per second."""
    doc, s, table, figure, fig_dir = r.doc, r.s, r.table, r.figure, r.fig_dir
    fr, effs = fronts(s), efficiency(s)
    doc.add(Heading(2, ["Efficiency–performance trade-off"]))
    figure(figs.tradeoff_figure(s, fr, fig_dir))
    if effs:
        # `or 0.0` only for mypy: the None values are filtered out before max sees them.
        best_m = max(
            (e for e in effs if e.per_mparam is not None),
            key=lambda e: e.per_mparam or 0.0,
            default=None,
        )
        best_t = max(
            (e for e in effs if e.per_second is not None),
            key=lambda e: e.per_second or 0.0,
            default=None,
        )
        parts: list[str] = []
        if best_m:
            parts += [
                "Most loss reduction per million trainable parameters: ",
                U(best_m.placement),
                f" ({fmt.ratio(best_m.per_mparam)} nats per M params). ",
            ]
        if best_t:
            parts += [
                "Most per training second: ",
                U(best_t.placement),
                f" ({fmt.ratio(best_t.per_second)} nats per s).",
            ]
        doc.add(Para(parts))
        doc.add(table(st.efficiency_table(effs, s, fr)))


def add_guidelines(r: SectionContext) -> None:
    """The best placement for each budget, read off the fronts."""
    doc, s, table = r.doc, r.s, r.table
    gl = guidelines(s, r.tests)
    doc.add(Heading(2, ["Practical guidelines"]))
    if gl:
        items = []
        for g in gl:
            p = s.get(g.placement)
            it = [
                f"With a budget of at least {fmt.cost(g.axis, g.budget)}: use ",
                U(g.placement),
                f" (eval loss {fmt.loss_ci(p.loss)})",
            ]
            if g.step_test is not None:
                word = verdict_word(r.fair, g.step_test) if r.fair is not None else None
                it.append(
                    f" — against the next cheaper choice: {word}"
                    if word
                    else " — over the next cheaper choice the gain is " + verdict(g.step_test)
                )
            it.append(".")
            items.append(it)
        doc.add(
            Para(
                [
                    "Read off the Pareto fronts: for each budget, the placement with the lowest "
                    "loss that fits it. A step marked within noise buys nothing measurable."
                ]
            )
        )
        doc.add(Bullets(items))
        doc.add(table(st.guideline_table(gl, s)))
    else:
        doc.add(
            Para(["No placement reports trainable parameters or train time; no budget advice."])
        )

    if r.fair is not None:
        doc.add(*guideline_notes(r.fair))


def add_importance(r: SectionContext) -> None:
    """Roles and layers ranked by paired gains of nested placements."""
    doc, table, figure, fig_dir = r.doc, r.table, r.figure, r.fig_dir
    imp = importance(r.s)
    doc.add(Heading(2, ["Importance hierarchy"]))
    if imp.empty:
        doc.add(
            Para(
                [
                    "The study holds no nested placements that differ by exactly one role or "
                    "one layer range (single role, single layer range, leave-one-out), so no "
                    "importance ranking can be read off it. Add such placements to rank roles "
                    "and layers."
                ]
            )
        )
    else:
        doc.add(
            Para(
                [
                    "Two placements are compared when one adapts everything the other does "
                    "(same rank and alpha) plus all its modules of exactly one role, or "
                    "everything on one contiguous layer range; zero-shot counts as the empty "
                    "placement. The gain is the loss difference, paired over shared seeds; "
                    "a unit's rank is by its mean gain over the comparisons named beside it."
                ]
            )
        )
        top = imp.roles[0] if imp.roles else imp.layers[0]
        doc.add(
            Para(
                [
                    "Most important: ",
                    U(st.unit_label(top.kind, top.unit)),
                    f" (mean gain {fmt.signed_loss(top.gain)} nats over {len(top.comparisons)} "
                    "comparison(s)).",
                ]
            )
        )
        doc.add(table(st.importance_table(imp)))
        figure(figs.heatmap_figure(imp, fig_dir))


def _consistency_text(c: Consistency) -> list[str]:
    text = [
        "Perplexity is exp of the token-weighted mean negative log-likelihood over all eval "
        "tokens, recomputed here from the stored loss. A mean of per-batch perplexities is "
        "larger (exp is convex, so by Jensen's inequality the mean of exp exceeds exp of the "
        "mean) and weighs every batch alike whatever its token count; it is not the "
        "perplexity of the eval set."
    ]
    infl = [r.inflation_pct for r in c.rows if r.inflation_pct is not None]
    if infl:
        text.append(
            f" Here it overstates perplexity by {fmt.signed_pct(min(infl))} % to "
            f"{fmt.signed_pct(max(infl))} %."
        )
    if c.reordered:
        text.append(
            " It also reorders the placements: ranked by mean batch perplexity they "
            "come out in a different order than by loss, so a study reporting it would "
            "contradict its own loss table. The loss and exp(loss) are the right numbers."
        )
    elif infl:
        text.append(
            " The order of the placements is the same either way, but only exp(loss) is "
            "comparable across studies."
        )
    return text


def add_consistency(r: SectionContext) -> None:
    """Whether stored perplexities agree with the losses."""
    doc, table = r.doc, r.table
    cons = consistency(r.s)
    doc.add(Heading(2, ["Loss and perplexity consistency"]))
    doc.add(Para(_consistency_text(cons)))
    doc.add(table(st.consistency_table(cons)))


def add_curves(r: SectionContext) -> None:
    """Learning curves."""
    doc, s, figure, fig_dir = r.doc, r.s, r.figure, r.fig_dir
    doc.add(Heading(2, ["Learning curves"]))
    figure(figs.curves_figure(s, fig_dir))
