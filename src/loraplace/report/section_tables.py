"""Tables of the analysis sections: tests, efficiency, guidelines, importance, consistency."""

from __future__ import annotations

from loraplace.analysis import (
    Consistency,
    Efficiency,
    Front,
    Guideline,
    Importance,
    PairedTest,
    Summary,
)
from loraplace.metrics import EVAL_LOSS
from loraplace.report import fmt
from loraplace.report.escape import U
from loraplace.report.tables import DASH, Table, _ci, _raw, seeds_cell


def stats_table(tests: list[PairedTest]) -> Table:
    cols = ["A", "B", "Shared seeds", "Loss A − B (nats)", "t", "p", "p (Holm)", "Verdict"]
    rows, raw = [], []
    for t in tests:
        verdict: str = t.verdict
        if verdict.endswith(" better"):
            verdict = U(t.a if t.diff and t.diff.mean < 0 else t.b)
            verdict = U(f"{verdict} better")
        rows.append(
            [
                U(t.a),
                U(t.b),
                seeds_cell(t.n),
                _ci(
                    t.diff,
                    lambda e: (
                        f"{fmt.signed_loss(e.mean)}"
                        + (f" ± {fmt.loss(e.ci)}" if e.ci is not None else "")
                    ),
                ),
                fmt.stat(t.t),
                fmt.pvalue(t.p),
                fmt.pvalue(t.p_holm),
                verdict,
            ]
        )
        raw.append(
            {
                "a": t.a,
                "b": t.b,
                "shared_seeds": t.n,
                **_raw(t.diff, "diff"),
                "t": t.t,
                "p": t.p,
                "p_holm": t.p_holm,
                "verdict": t.verdict,
            }
        )
    return Table(
        "stats",
        "Paired t-tests on eval loss over shared seeds (Holm-corrected)",
        cols,
        rows,
        raw,
        align="llrrrrrl",
    )


def efficiency_table(effs: list[Efficiency], s: Summary, fr: dict[str, Front]) -> Table:
    cols = [
        "Placement",
        "Loss reduction vs zero-shot (nats)",
        "Trainable params",
        "Reduction per M params",
        "Train time (s)",
        "Reduction per train s",
        "On params front",
        "On time front",
    ]
    rows, raw = [], []
    for e in effs:
        p = s.get(e.placement)
        on = {
            a: ("yes" if a in fr and fr[a].on_front(e.placement) else "no")
            for a in ("params", "time")
        }
        rows.append(
            [
                U(e.placement),
                _ci(p.loss_reduction),
                fmt.count(p.trainable_params) if p.trainable_params else DASH,
                fmt.ratio(e.per_mparam),
                _ci(p.train_time, fmt.seconds_ci),
                fmt.ratio(e.per_second),
                on["params"],
                on["time"],
            ]
        )
        raw.append(
            {
                "placement": e.placement,
                "loss_reduction": e.reduction,
                "trainable_params": p.trainable_params,
                "per_mparam": e.per_mparam,
                "train_time_s": p.train_time.mean if p.train_time else None,
                "per_second": e.per_second,
                "params_front": on["params"] == "yes",
                "time_front": on["time"] == "yes",
            }
        )
    return Table(
        "efficiency",
        "Efficiency: loss reduction per million trainable params and per training second",
        cols,
        rows,
        raw,
        align="lrrrrrll",
    )


def guideline_table(gs: list[Guideline], s: Summary) -> Table:
    cols = ["Budget", "From", "Best placement", "Eval loss (nats)", "vs next cheaper tier"]
    rows, raw = [], []
    for g in gs:
        p = s.get(g.placement)
        step = DASH
        if g.step_test is not None:
            t = g.step_test
            step = f"Holm p = {fmt.pvalue(t.p_holm)}" + (
                " (within noise)" if t.within_noise else ""
            )
        rows.append(
            [
                {"params": "trainable params", "time": "train time"}[g.axis],
                fmt.cost(g.axis, g.budget),
                U(g.placement),
                fmt.loss_ci(p.loss),
                step,
            ]
        )
        raw.append(
            {
                "axis": g.axis,
                "budget": g.budget,
                "placement": g.placement,
                EVAL_LOSS: g.loss,
                "p_holm_vs_cheaper": g.step_test.p_holm if g.step_test else None,
            }
        )
    return Table(
        "guidelines",
        "Best placement for each budget (Pareto front)",
        cols,
        rows,
        raw,
        align="lrlrl",
    )


def unit_label(kind: str, unit: str) -> str:
    """'mlp.up (role)' or 'layers 0-5' (a layer range names itself)."""
    return f"{unit} (role)" if kind == "role" else unit


def importance_table(imp: Importance) -> Table:
    cols = [
        "Unit",
        "Rank by gain",
        "Mean gain (nats)",
        "Rank by gain/param",
        "Gain per M params",
        "Comparisons (with − without)",
    ]
    rows, raw = [], []
    for r in imp.roles + imp.layers:
        comps = "; ".join(
            f"{c.with_} vs {c.without}: {fmt.signed_loss(c.gain.mean)}"
            + (f" ± {fmt.loss(c.gain.ci)}" if c.gain.ci is not None else "")
            + f" for +{fmt.count(c.added_params)} params"
            for c in r.comparisons
        )
        rows.append(
            [
                U(unit_label(r.kind, r.unit)),
                str(r.rank_gain),
                fmt.signed_loss(r.gain),
                str(r.rank_per_param) if r.rank_per_param else DASH,
                fmt.ratio(r.per_mparam),
                U(comps),
            ]
        )
        raw.append(
            {
                "kind": r.kind,
                "unit": r.unit,
                "rank_gain": r.rank_gain,
                "gain": r.gain,
                "rank_per_param": r.rank_per_param,
                "per_mparam": r.per_mparam,
                "comparisons": comps,
            }
        )
    return Table(
        "importance",
        "Importance of roles and layer ranges (marginal gain)",
        cols,
        rows,
        raw,
        align="lrrrrl",
    )


def consistency_table(c: Consistency) -> Table:
    cols = [
        "Placement",
        "Token-weighted loss (nats)",
        "PPL = exp(loss)",
        "Mean of batch PPLs",
        "Inflation (%)",
        "Rank by loss",
        "Rank by batch PPL",
    ]
    rows, raw = [], []
    for r in c.rows:
        rank_b = str(c.order_by_batch_ppl.index(r.placement) + 1) if c.order_by_batch_ppl else DASH
        rows.append(
            [
                U(r.placement),
                fmt.loss(r.loss),
                fmt.ppl(r.ppl),
                fmt.ppl(r.mean_batch_ppl) if r.mean_batch_ppl is not None else DASH,
                fmt.signed_pct(r.inflation_pct) if r.inflation_pct is not None else DASH,
                str(c.order_by_loss.index(r.placement) + 1),
                rank_b,
            ]
        )
        raw.append(
            {
                "placement": r.placement,
                "loss": r.loss,
                "ppl": r.ppl,
                "mean_batch_ppl": r.mean_batch_ppl,
                "inflation_pct": r.inflation_pct,
            }
        )
    return Table(
        "consistency",
        "Perplexity recomputed from the token-weighted loss against "
        "the mean of per-batch perplexities",
        cols,
        rows,
        raw,
    )
