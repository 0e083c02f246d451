"""The small results table printed at the end of ``loraplace run``: one row per placement.

Eval loss is the mean over seeds with a 95 % confidence interval from the t-distribution;
perplexity is exp of that mean loss. Diverged, failed and flagged (worse than zero-shot)
runs are counted, never averaged.
(The full statistics and the report live in ``analysis`` and ``report``; this reads only
the metrics table, so it stays quick at the end of a run, and shares their CI.)
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from loraplace.metrics import EVAL_LOSS, RETAIN_LOSS, RETAIN_ZERO_SHOT_LOSS
from loraplace.store import Store


@dataclass
class PlacementRow:
    """One placement's results over its seeds."""

    placement: str
    kind: str
    runs: int  # runs of this placement in the study
    done: int
    diverged: int = 0
    failed: int = 0
    flagged: int = 0  # worse than zero-shot: kept out of the mean
    pruned: int = 0  # stopped at a successive-halving rung: kept out of the mean
    pending: int = 0  # pending, running or interrupted
    eval_loss: float | None = None  # mean over done seeds, nats/token
    ci95: float | None = None  # half-width of the 95 % t-interval; None with one seed
    ppl: float | None = None  # exp(mean eval loss)
    trainable_params: int | None = None
    trainable_pct: float | None = None
    train_time_s: float | None = None  # mean over seeds
    tokens_per_s: float | None = None  # mean over seeds
    retain_loss: float | None = None  # mean over seeds; forgetting = this - retain_zero_shot
    retain_zero_shot_loss: float | None = None
    floor: float | None = None
    seeds: list[int] = field(default_factory=list)


def t_ci95(values: list[float]) -> float | None:
    """Half-width of the 95 % confidence interval of the mean (Student t): the report's
    own estimate (``analysis.aggregate.estimate``), imported only when a table is made."""
    from loraplace.analysis.aggregate import estimate

    e = estimate(values)
    return e.ci if e is not None else None


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def run_end_rows(store: Store, study_id: str) -> list[PlacementRow]:
    """Rows in study order (zero-shot first when the study has it)."""
    runs = store.runs(study_id)
    metrics = store.metrics(r["run_id"] for r in runs)
    groups: dict[str, list[dict]] = {}
    for r in runs:  # rows of a study across models and tasks are model/task/placement
        spec = r.get("spec") or {}
        where = [x for x in (spec.get("model_name"), spec.get("task")) if x]
        groups.setdefault("/".join([*where, r["placement"]]), []).append(r)
    rows = []
    for placement, rs in groups.items():
        done = [r for r in rs if r["status"] == "done" and r["run_id"] in metrics]
        ms = [metrics[r["run_id"]] for r in done]

        def col(name: str, ms=ms) -> list[float]:
            return [m[name] for m in ms if name in m]

        losses = col(EVAL_LOSS)
        mean_loss = _mean(losses)
        trainable = col("trainable_params")
        rows.append(
            PlacementRow(
                placement=placement,
                kind=rs[0]["kind"],
                runs=len(rs),
                done=len(done),
                diverged=sum(r["status"] == "diverged" for r in rs),
                failed=sum(r["status"] == "failed" for r in rs),
                flagged=sum(r["status"] == "flagged" for r in rs),
                pruned=sum(r["status"] == "pruned" for r in rs),
                pending=sum(r["status"] in ("pending", "running", "interrupted") for r in rs),
                eval_loss=mean_loss,
                ci95=t_ci95(losses),
                ppl=math.exp(mean_loss) if mean_loss is not None else None,
                trainable_params=int(trainable[0]) if trainable else None,
                trainable_pct=_mean(col("trainable_pct")),
                train_time_s=_mean(col("train_time_s")),
                tokens_per_s=_mean(col("tokens_per_s")),
                retain_loss=_mean(col(RETAIN_LOSS)),
                retain_zero_shot_loss=_mean(col(RETAIN_ZERO_SHOT_LOSS)),
                floor=_mean(col("floor")),
                seeds=sorted(r["seed"] for r in done),
            )
        )
    return rows


def render_table(rows: list[PlacementRow], title: str | None = None):
    """A rich Table of the rows (placement, eval loss ± CI, ppl, params, %, time, tokens/s)."""
    from rich.markup import escape
    from rich.table import Table

    show_retain = any(r.retain_loss is not None for r in rows)
    table = Table(title=title, title_justify="left")
    table.add_column("placement")
    table.add_column("seeds", justify="right")
    table.add_column("eval loss ± 95% CI", justify="right")
    table.add_column("ppl", justify="right")
    table.add_column("trainable", justify="right")
    table.add_column("%", justify="right")
    table.add_column("train s", justify="right")
    table.add_column("tokens/s", justify="right")
    if show_retain:
        table.add_column("forgetting", justify="right")
    for r in rows:
        seeds = f"{r.done}/{r.runs}"
        if r.diverged:
            seeds += f" ({r.diverged} diverged)"
        if r.failed:
            seeds += f" ({r.failed} failed)"
        if r.flagged:
            seeds += f" ({r.flagged} worse than zero-shot)"
        if r.pruned:
            seeds += f" ({r.pruned} pruned)"
        loss = "—"
        if r.eval_loss is not None:
            loss = f"{r.eval_loss:.4f}" + (f" ± {r.ci95:.4f}" if r.ci95 is not None else "")
        cells = [
            escape(r.placement),  # a user's name, not rich markup
            seeds,
            loss,
            _fmt(r.ppl, "{:.3f}"),
            _fmt(r.trainable_params, "{:,}"),
            _fmt(r.trainable_pct, "{:.2f}"),
            _fmt(r.train_time_s if r.kind != "zero-shot" else None, "{:.1f}"),
            _fmt(r.tokens_per_s if r.kind != "zero-shot" else None, "{:,.0f}"),
        ]
        if show_retain:
            forget = None
            if r.retain_loss is not None and r.retain_zero_shot_loss is not None:
                forget = r.retain_loss - r.retain_zero_shot_loss
            cells.append(_fmt(forget, "{:+.4f}"))
        table.add_row(*cells)
    return table


def table_caption(rows: list[PlacementRow]) -> str:
    """One line under the table: the floor and what the columns mean."""
    floors = [r.floor for r in rows if r.floor is not None]
    parts = ["eval loss: token-weighted mean NLL (nats), mean over seeds; ppl = exp(mean)"]
    if floors:
        parts.append(f"floor (Bayes-optimal loss on these tokens): {floors[0]:.4f}")
    if any(r.retain_loss is not None for r in rows):
        parts.append("forgetting = retain loss after - before adaptation")
    return "; ".join(parts)


def _fmt(value, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)
