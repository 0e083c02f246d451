"""Report sections for budgeted studies and probes: allocated vs presets vs random, and
probe scores against trained single-role placements."""

from __future__ import annotations

from collections.abc import Callable

from loraplace.analysis import Summary
from loraplace.analysis.budgeted import BudgetCheck, budget_check
from loraplace.analysis.probe_check import ProbeCheck, probe_check
from loraplace.metrics import EVAL_LOSS
from loraplace.report import fmt
from loraplace.report.escape import U
from loraplace.report.render import Document, Heading, Para, TableBlock
from loraplace.report.tables import DASH, Table, _ci, _raw, seeds_cell

AddTable = Callable[[Table], TableBlock]


def _diff_cell(t) -> str:
    if t is None or t.diff is None:
        return DASH
    e = t.diff
    return fmt.signed_loss(e.mean) + (f" ± {fmt.loss(e.ci)}" if e.ci is not None else "")


def budget_table(bc: BudgetCheck) -> Table:
    cols = ["Placement", "Origin", "Trainable params", "Δ vs budget", "Seeds", "Eval loss (nats)"]
    allocated = [c.placement for c in bc.checks]
    if allocated:
        cols.append(f"Loss − {allocated[0]} (nats)")
    rows, raw = [], []
    first = bc.checks[0] if bc.checks else None
    for r in bc.rows:
        dev = (
            fmt.signed_pct(100 * (r.params - bc.budget) / bc.budget)
            if bc.budget and r.params is not None
            else DASH
        )
        row = [
            U(r.placement),
            U(r.origin),
            fmt.count(r.params) if r.params is not None else DASH,
            dev + (" %" if dev != DASH else ""),
            seeds_cell(r.loss.n),
            fmt.loss_ci(r.loss),
        ]
        if first is not None:
            if r.placement == first.placement:
                row.append(DASH)
            else:
                row.append(fmt.signed_loss(r.loss.mean - first.loss.mean))
        rows.append(row)
        raw.append(
            {
                "placement": r.placement,
                "origin": r.origin,
                "trainable_params": r.params,
                "budget": bc.budget,
                "seeds": r.loss.n,
                **_raw(r.loss, EVAL_LOSS),
            }
        )
    align = "llrrrr" + "r" * (len(cols) - 6)
    return Table("budget", "Placements at one parameter budget", cols, rows, raw, align=align)


def allocated_table(bc: BudgetCheck) -> Table:
    cols = ["Allocated", "Against", "Shared seeds", "Loss A − B (nats)", "p", "p (Holm)"]
    rows, raw = [], []
    for c in bc.checks:
        tests = list(c.vs_others) + ([c.vs_random] if c.vs_random is not None else [])
        for t in tests:
            rows.append(
                [
                    U(t.a),
                    U(t.b),
                    seeds_cell(t.n),
                    _diff_cell(t),
                    fmt.pvalue(t.p),
                    fmt.pvalue(t.p_holm),
                ]
            )
            raw.append(
                {
                    "allocated": t.a,
                    "against": t.b,
                    "shared_seeds": t.n,
                    **_raw(t.diff, "diff"),
                    "p": t.p,
                    "p_holm": t.p_holm,
                }
            )
    return Table(
        "budget_tests",
        "Allocated placement against the others of its budget (paired over seeds)",
        cols,
        rows,
        raw,
        align="llrrrr",
    )


def add_budget_section(doc: Document, table: AddTable, s: Summary) -> None:
    bc = budget_check(s)
    if bc is None:
        return
    doc.add(Heading(2, ["Equal budget"]))
    spent = f"{fmt.count(bc.budget)} trainable parameters" if bc.budget else "one budget"
    doc.add(
        Para(
            [
                f"Every placement was given {spent} (budget: ",
                U(bc.budget_text),
                "): presets and specs at the rank that comes closest without exceeding it, "
                "allocated placements by the knapsack over probe scores, random placements "
                "by a seeded random fill of the same budget.",
            ]
        )
    )
    doc.add(table(budget_table(bc)))
    for c in bc.checks:
        parts: list = ["The allocated placement ", U(c.placement), f" ({fmt.loss_ci(c.loss)}) "]
        if c.vs_others:
            n = len(c.vs_others)
            worse = [t.b for t in c.vs_others if t.diff is None or t.diff.mean >= 0]
            if not worse:
                parts.append(f"has a lower mean loss than all {n} presets and specs of the budget")
            else:
                parts.append(f"has a lower mean loss than {n - len(worse)} of the {n} presets ")
                parts.append("and specs of the budget, but not than ")
                for i, w in enumerate(worse):
                    parts += [", " if i else "", U(w)]
            sig = [t for t in c.vs_others if not t.within_noise]
            parts.append(
                f"; {len(sig)} of the {n} differences "
                f"{'is' if len(sig) == 1 else 'are'} significant after Holm"
            )
        if c.random_mean is not None and c.vs_random is not None:
            verdict = "beats" if c.beats_random_mean else "does not beat"
            parts.append(
                f"; it {verdict} the mean of the {c.random_mean.n} random placements "
                f"({fmt.loss_ci(c.random_mean)}; per seed {_diff_cell(c.vs_random)} nats, "
                f"p = {fmt.pvalue(c.vs_random.p)})"
            )
        parts.append(".")
        doc.add(Para(parts))
    if bc.checks:
        doc.add(table(allocated_table(bc)))


def probe_table(pc: ProbeCheck) -> Table:
    names = list(pc.per_lora)
    cols = ["Role", "Single-role placement", "Trained gain (nats)", "Rank (trained)"]
    for n in names:
        cols += [f"{n}{' / LoRA param' if pc.per_lora[n] else ''}", f"Rank ({n})"]
    trained_rank = pc.ranking(None)
    ranks = {n: pc.ranking(n) for n in names}
    rows, raw = [], []
    for r in pc.roles:
        row = [
            U(r.role),
            U(r.placement) if r.placement else DASH,
            _ci(r.trained_gain),
            str(trained_rank.index(r.role) + 1) if r.role in trained_rank else DASH,
        ]
        rec = {"role": r.role, "placement": r.placement, **_raw(r.trained_gain, "gain")}
        for n in names:
            v = r.scores.get(n)
            row += [f"{v:.3e}" if v is not None else DASH, str(ranks[n].index(r.role) + 1)]
            rec[n] = v
        rows.append(row)
        raw.append(rec)
    align = "ll" + "r" * (len(cols) - 2)
    return Table(
        "probe", "Probe scores before training against trained gains", cols, rows, raw, align=align
    )


def add_probe_section(doc: Document, table: AddTable, s: Summary) -> None:
    pc = probe_check(s)
    if pc is None:
        return
    doc.add(Heading(2, ["Probes before training"]))
    m = pc.meta
    doc.add(
        Para(
            [
                f"Importance probes scored every (layer, role) on {m.get('batches', '?')} "
                f"batches of {m.get('batch_size', '?')} train blocks (seed {m.get('seed', '?')}"
                f", {m.get('tokens', '?')} tokens) before any training. A role's score is the "
                "mean over layers, per LoRA parameter for scores that add up over a module's "
                "weights; nfn is inverted (PLoP: low normalised feature norm means adapt). The "
                "trained gain is zero-shot loss minus the eval loss of the study's "
                "single-role placement of that role."
            ]
        )
    )
    doc.add(table(probe_table(pc)))
    if pc.n_trained >= 3:
        parts: list = [
            f"Spearman rank correlation with the trained gains over {pc.n_trained} roles: "
        ]
        parts.append(
            "; ".join(
                f"{n} {f'{v:+.2f}' if v is not None else 'undefined'}" for n, v in pc.rho.items()
            )
        )
        parts += [". Trained order: ", U(" > ".join(pc.ranking(None))), "."]
        doc.add(Para(parts))
    else:
        doc.add(
            Para(
                [
                    f"Only {pc.n_trained} role(s) have a single-role placement in this study: "
                    "add one per role (e.g. attn.qkv, attn.o, mlp.up, mlp.down at one budget) "
                    "to set the probe against training."
                ]
            )
        )
