"""Perplexity from loss, and how far a mean of per-batch perplexities strays from it.

Perplexity is exp of the token-weighted mean NLL over all eval tokens. Averaging
exp(batch mean loss) over batches instead is biased upward (exp is convex: Jensen's
inequality) and weights short batches like long ones, so it can disagree with the loss
and even reorder placements: the "perplexity versus loss" contradiction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from loraplace.analysis.aggregate import Summary
from loraplace.metrics import EVAL_LOSS, EVAL_PPL

REL_TOL = 1e-6  # stored eval_ppl must equal exp(eval_loss) to this relative tolerance


@dataclass(frozen=True)
class ConsistencyRow:
    placement: str
    loss: float  # seed-mean token-weighted NLL, nats
    ppl: float  # exp(loss): the right perplexity
    mean_batch_ppl: float | None  # seed mean of the per-batch-perplexity mean, if stored

    @property
    def inflation_pct(self) -> float | None:
        if self.mean_batch_ppl is None:
            return None
        return 100.0 * (self.mean_batch_ppl / self.ppl - 1.0)


@dataclass(frozen=True)
class Mismatch:
    """A run whose stored eval_ppl is not exp(eval_loss)."""

    run_id: str
    placement: str
    seed: int
    stored_ppl: float
    recomputed_ppl: float


@dataclass(frozen=True)
class Consistency:
    rows: list[ConsistencyRow]
    mismatches: list[Mismatch]
    order_by_loss: list[str]
    order_by_batch_ppl: list[str] | None  # None when mean_batch_ppl is missing somewhere

    @property
    def reordered(self) -> bool:
        """True when ranking by mean batch perplexity disagrees with ranking by loss."""
        return self.order_by_batch_ppl is not None and self.order_by_batch_ppl != self.order_by_loss


def consistency(summary: Summary) -> Consistency:
    rows, mismatches = [], []
    for p in summary.placements:
        batch = [r.metrics["mean_batch_ppl"] for r in p.runs if "mean_batch_ppl" in r.metrics]
        rows.append(
            ConsistencyRow(
                p.placement,
                p.loss.mean,
                p.ppl,
                float(np.mean(batch)) if len(batch) == len(p.runs) else None,
            )
        )
        for r in p.runs:
            stored = r.metrics.get(EVAL_PPL)
            again = math.exp(r.metrics[EVAL_LOSS])
            if stored is not None and abs(stored - again) > REL_TOL * again:
                mismatches.append(Mismatch(r.run_id, p.placement, r.seed, stored, again))
    by_loss = [r.placement for r in sorted(rows, key=lambda r: r.loss)]
    by_batch = None
    if rows and all(r.mean_batch_ppl is not None for r in rows):
        by_batch = [r.placement for r in sorted(rows, key=lambda r: r.mean_batch_ppl)]  # type: ignore[arg-type, return-value]
    return Consistency(rows, mismatches, by_loss, by_batch)
