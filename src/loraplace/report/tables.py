"""The report's tables, built from the analysis and written as Markdown, LaTeX and CSV.

Cells hold display strings (rounded by ``fmt``); user strings are ``U`` and get escaped by
each writer. The CSV carries the unrounded values for anyone who wants to recompute.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

from loraplace.analysis import (
    Estimate,
    Summary,
)
from loraplace.analysis.aggregate import MIN_SEEDS
from loraplace.metrics import EVAL_LOSS
from loraplace.peak_memory import column_for, measure_of
from loraplace.report import fmt
from loraplace.report.escape import U, md, tex

DASH = "—"


@dataclass
class Table:
    """One table: header, display rows, raw rows for CSV, notes printed under it."""

    name: str  # file stem under tables/
    title: str
    columns: list[str]
    rows: list[list[str]]
    raw: list[dict[str, object]] = field(default_factory=list)
    notes: list[list[str]] = field(default_factory=list)  # each note: parts (str or U)
    align: str = ""  # one of l/r per column; default: first left, rest right

    def alignment(self) -> str:
        return self.align or "l" + "r" * (len(self.columns) - 1)


def _cell_md(c: str) -> str:
    return md(c) if isinstance(c, U) else c.replace("|", "\\|")


def to_markdown(t: Table) -> str:
    al = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = [
        "| " + " | ".join(c.replace("|", "\\|") for c in t.columns) + " |",
        "| " + " | ".join(al[a] for a in t.alignment()) + " |",
    ]
    lines += ["| " + " | ".join(_cell_md(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines)


def to_latex(t: Table) -> str:
    """A booktabs table (needs \\usepackage{booktabs,graphicx})."""
    body = [" & ".join(tex(c) for c in t.columns) + r" \\", r"\midrule"]
    body += [" & ".join(tex(c) for c in row) + r" \\" for row in t.rows]
    return "\n".join(
        [
            "% requires \\usepackage{booktabs,graphicx}",
            r"\begin{table}[t]",
            r"\centering",
            r"\caption{" + tex(t.title) + "}",
            r"\label{tab:" + t.name + "}",
            r"\resizebox{\textwidth}{!}{%",
            r"\begin{tabular}{" + t.alignment() + "}",
            r"\toprule",
            *body,
            r"\bottomrule",
            r"\end{tabular}}",
            r"\end{table}",
            "",
        ]
    )


def to_csv(t: Table) -> str:
    buf = io.StringIO()
    if t.raw:
        w = csv.DictWriter(buf, fieldnames=list(t.raw[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(t.raw)
    else:
        w2 = csv.writer(buf, lineterminator="\n")
        w2.writerow(t.columns)
        w2.writerows(t.rows)
    return buf.getvalue()


def _ci(e: Estimate | None, f=fmt.loss_ci) -> str:
    return DASH if e is None else f(e)


def _raw(e: Estimate | None, prefix: str) -> dict[str, object]:
    return {f"{prefix}_mean": e.mean if e else None, f"{prefix}_ci95": e.ci if e else None}


def seeds_cell(n: int) -> str:
    return f"{n} (<{MIN_SEEDS})" if n < MIN_SEEDS else str(n)


Row = tuple[dict[str, str], dict[str, object]]  # display cells by column, CSV values


def _zero_shot_row(zs, ref, has: dict[str, bool]) -> Row:
    """The zero-shot baseline's row (first)."""
    cells = {
        "Placement": "zero-shot",
        "Kind": "baseline",
        # One evaluation, which no seed changes (older stores held one per seed).
        "Seeds": "n/a (evaluation)" if zs.loss.n == 1 else seeds_cell(zs.loss.n),
        "Eval loss (nats)": fmt.loss_ci(zs.loss),
        "PPL": fmt.ppl(zs.ppl),
        "Trainable params": "0",
        "% of total": fmt.pct(0.0),
    }
    if ref:
        cells["Δ loss vs ref (%)"] = fmt.signed_pct(100 * (zs.loss.mean / ref.loss.mean - 1))
    if has["gap"]:
        cells["Gap closed (%)"] = fmt.pct(0.0)
    return (
        cells,
        {
            "placement": "zero-shot",
            "kind": "zero-shot",
            "seeds": zs.loss.n,
            **_raw(zs.loss, EVAL_LOSS),
            "ppl": zs.ppl,
            "trainable_params": 0,
        },
    )


def _placement_row(p, s: Summary, mem_col: str) -> Row:
    """One trained placement's row, aggregated over its finished seeds."""
    cells = {
        "Placement": U(p.placement),
        "Kind": U(p.kind),
        "Seeds": seeds_cell(p.loss.n),
        "Eval loss (nats)": fmt.loss_ci(p.loss),
        "PPL": fmt.ppl(p.ppl),
    }
    if p.trainable_params is not None:
        cells["Trainable params"] = fmt.count(p.trainable_params)
    if p.trainable_pct is not None:
        cells["% of total"] = fmt.pct(p.trainable_pct)
    if p.reduction_vs_full is not None:
        cells["Fewer params than full FT"] = fmt.factor(p.reduction_vs_full)
    if p.rel_loss_vs_ref is not None:
        mark = " (ref)" if p.placement == s.reference else ""
        cells["Δ loss vs ref (%)"] = fmt.signed_pct(p.rel_loss_vs_ref) + mark
    cells["Train time (s)"] = _ci(p.train_time, fmt.seconds_ci)
    if p.speedup_vs_ref is not None:
        cells["Speed-up vs ref"] = fmt.factor(p.speedup_vs_ref)
    if p.tokens_per_s:
        cells["Tokens/s"] = fmt.rate(p.tokens_per_s.mean)
    if p.peak_mem_bytes:
        cells[mem_col] = fmt.mib(p.peak_mem_bytes.mean)
    if p.gap_closed:
        cells["Gap closed (%)"] = fmt.pct_ci(p.gap_closed)
    if p.forgetting:
        cells["Forgetting (nats)"] = fmt.signed_loss(p.forgetting.mean)
    return (
        cells,
        {
            "placement": p.placement,
            "kind": p.kind,
            "seeds": p.loss.n,
            **_raw(p.loss, EVAL_LOSS),
            "ppl": p.ppl,
            "trainable_params": p.trainable_params,
            "trainable_pct": p.trainable_pct,
            "reduction_vs_full": p.reduction_vs_full,
            "rel_loss_vs_ref_pct": p.rel_loss_vs_ref,
            **_raw(p.train_time, "train_time_s"),
            "speedup_vs_ref": p.speedup_vs_ref,
            "tokens_per_s": p.tokens_per_s.mean if p.tokens_per_s else None,
            "peak_mem_bytes": p.peak_mem_bytes.mean if p.peak_mem_bytes else None,
            "peak_mem_measure": measure_of(r.metrics for r in p.runs),
            **_raw(p.gap_closed, "gap_closed"),
            **_raw(p.forgetting, "forgetting"),
        },
    )


def _floor_row(floor: float, has: dict[str, bool]) -> Row:
    """The Bayes-optimal floor's row (last), where the data has one."""
    cells = {
        "Placement": "floor",
        "Kind": "Bayes-optimal",
        "Eval loss (nats)": fmt.loss(floor),
    }
    cells["PPL"] = fmt.ppl(math.exp(floor))
    if has["gap"]:
        cells["Gap closed (%)"] = fmt.pct(100.0)
    return cells, {"placement": "floor", "kind": "floor", "eval_loss_mean": floor}


def _results_notes(ref, has: dict[str, bool]) -> list[list[str]]:
    """What the results table's columns mean."""
    notes: list[list[str]] = [
        [
            "Eval loss: token-weighted mean NLL over all eval tokens, mean ± 95 % t-interval "
            "half-width over the finished seeds; PPL = exp(mean eval loss)."
        ],
    ]
    if ref:
        notes.append(
            [
                "Reference placement (most trainable parameters unless chosen): ",
                U(ref.placement),
                ".",
            ]
        )
    if has["gap"]:
        notes.append(
            [
                "Gap closed = (zero-shot loss − run loss) / (zero-shot loss − floor), "
                "per run, then averaged."
            ]
        )
    if has["forget"]:
        notes.append(
            [
                "Forgetting = retain loss after adaptation − before, on the base "
                "distribution (positive: the model forgot)."
            ]
        )
    return notes


def results_table(s: Summary) -> Table:
    """One row per placement, with the zero-shot baseline first and the floor last."""
    ps = s.placements
    has = {
        "tok": any(p.tokens_per_s for p in ps),
        "mem": any(p.peak_mem_bytes for p in ps),
        "time": any(p.train_time for p in ps),
        "gap": any(p.gap_closed for p in ps),
        "forget": s.has_forgetting,
    }
    cols = ["Placement", "Kind", "Seeds", "Eval loss (nats)", "PPL", "Trainable params"]
    cols += ["% of total", "Fewer params than full FT", "Δ loss vs ref (%)"]
    if has["time"]:
        cols += ["Train time (s)", "Speed-up vs ref"]
    if has["tok"]:
        cols.append("Tokens/s")
    mem_col, mem_note = column_for(r.metrics for p in ps for r in p.runs)
    if has["mem"]:
        cols.append(mem_col)
    if has["gap"]:
        cols.append("Gap closed (%)")
    if has["forget"]:
        cols.append("Forgetting (nats)")
    ref = s.get(s.reference) if s.reference else None
    rows, raw = [], []

    def add(cells: dict[str, str], rawrow: dict[str, object]) -> None:
        rows.append([cells.get(c, DASH) for c in cols])
        raw.append(rawrow)

    if s.zero_shot is not None:
        add(*_zero_shot_row(s.zero_shot, ref, has))
    for p in ps:
        add(*_placement_row(p, s, mem_col))
    if s.floor is not None:
        add(*_floor_row(s.floor, has))
    # CSV rows share one header: fill the keys a row lacks.
    keys = list(dict.fromkeys(k for r in raw for k in r))
    raw = [{k: r.get(k) for k in keys} for r in raw]
    notes = _results_notes(ref, has)
    if has["mem"]:
        notes.append([mem_note + " Seed mean."])
    align = "ll" + "r" * (len(cols) - 2)
    return Table("results", "Results per placement", cols, rows, raw, notes, align)


def coverage_table(s: Summary) -> Table:
    """Which roles and layers each placement adapts, read from its resolved modules."""
    rows, raw = [], []
    for p in s.placements:
        mods = p.runs[0].modules
        by_role: dict[str, list[int]] = {}
        for m in mods:
            by_role.setdefault(str(m.get("role", "?")), []).append(m.get("layer", -1))
        parts = []
        for role, layers in by_role.items():
            ls = sorted(x for x in layers if x is not None)
            span = (
                f"{ls[0]}-{ls[-1]}"
                if ls and ls == list(range(ls[0], ls[-1] + 1))
                else ",".join(map(str, ls))
            )
            parts.append(f"{role} [{span}]")
        ranks = sorted({int(m.get("rank") or 0) for m in mods})
        rows.append(
            [
                U(p.placement),
                U("; ".join(parts)) if parts else DASH,
                str(len(mods)),
                "/".join(map(str, ranks)) if ranks else DASH,
            ]
        )
        raw.append(
            {
                "placement": p.placement,
                "roles": "; ".join(parts),
                "modules": len(mods),
                "ranks": "/".join(map(str, ranks)),
            }
        )
    return Table(
        "coverage",
        "What each placement adapts (role [layers])",
        ["Placement", "Roles [layers]", "Modules", "Rank"],
        rows,
        raw,
        align="llrr",
    )


def excluded_table(s: Summary) -> Table:
    rows, raw = [], []
    for r in s.excluded:
        step = str(r.diverged_step) if r.diverged_step is not None else DASH
        rows.append(
            [U(r.placement), str(r.seed), U(r.status), step, U(r.error) if r.error else DASH]
        )
        raw.append(
            {
                "placement": r.placement,
                "run_id": r.run_id,
                "seed": r.seed,
                "status": r.status,
                "diverged_step": r.diverged_step,
                "error": r.error,
            }
        )
    return Table(
        "excluded",
        "Runs that contribute no numbers",
        ["Placement", "Seed", "Status", "Diverged at step", "Error"],
        rows,
        raw,
        align="lrlrl",
    )
