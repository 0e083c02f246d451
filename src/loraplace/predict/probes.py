"""Predictors from importance probes: a few batches of forward (and backward) passes.

- ``taylor``, ``lora_grad``, ``out_norm``: the probe scores of ``loraplace.probe``. A
  placement scores the *sum* of the importance of the (layer, role)s it adapts, each
  counted once whatever its rank: a probe says where an adapter should go, not how wide.
  At an equal budget this favours placements that reach the important units.
- ``plop``: PLoP (Hayou et al., ICLR 2026). The NFN of each module type is the mean over
  layers of its modules' NFN, from forward passes over 100 sequences (the official
  code's default sample count); PLoP adapts the types with the *lowest* NFN. A placement
  scores minus the NFN of the types it spends on, weighted by the LoRA parameters it
  spends there: the more of the budget in low-NFN types, the better. ``detail`` keeps
  PLoP's own pick: the three lowest types (its "v, o, down" on Qwen).

Each predictor's cost is the wall time of its probe: loading the model and data too.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

from loraplace.predict.base import (
    Candidate,
    Context,
    Prediction,
    PredictorInfo,
    module_params,
    register,
)
from loraplace.probe import probe
from loraplace.probe.result import ProbeResult

PLOP_SAMPLES = 100  # sequences: github.com/soufiane001/plop main.py --nbsamples default
PLOP_BATCH = 10
PLOP_PICK = 3  # module types PLoP adapts (v, o, down in the paper's GSM8K runs)

_CACHE: dict[tuple, tuple[ProbeResult, float]] = {}  # one probe serves its three scores


def clear_cache() -> None:
    _CACHE.clear()


def _probe(ctx: Context, *, batches: int, batch_size: int, gradients: bool):
    """The probe for ``ctx`` and the seconds it took (cached within the process, so
    taylor, lora_grad and out_norm share one pass but each reports its full cost)."""

    train = ctx.train
    key = (ctx.model, ctx.dataset, ctx.seed, batches, batch_size, gradients)
    if key not in _CACHE:
        t0 = time.perf_counter()
        result = probe(
            ctx.model,
            ctx.dataset,
            batches=batches,
            batch_size=batch_size,
            block_size=train.get("block_size"),
            seed=ctx.seed,
            split_seed=int(train.get("split_seed", 0)),
            text_field=ctx.text_field,
            gradients=gradients,
        )
        _CACHE[key] = (result, time.perf_counter() - t0)
    return _CACHE[key]


def study_probe(ctx: Context):
    """The probe a study runs for its allocations (``probe:`` defaults, 4 x 8 blocks)."""
    opts = ctx.options
    return _probe(
        ctx,
        batches=int(opts.get("probe_batches", 4)),
        batch_size=int(opts.get("probe_batch_size", 8)),
        gradients=True,
    )


def score_sum(importance: dict[tuple[int, str], float], candidates: list[Candidate]):
    """label -> sum of the importance of the (layer, role)s the placement adapts."""
    return {c.label: sum(importance.get(k, 0.0) for k in c.units) for c in candidates}


def _probe_predictor(score: str):
    def predict(ctx: Context, candidates: list[Candidate]) -> Prediction:
        if score == "out_norm":  # forward passes suffice
            opts = ctx.options
            result, seconds = _probe(
                ctx,
                batches=int(opts.get("probe_batches", 4)),
                batch_size=int(opts.get("probe_batch_size", 8)),
                gradients=False,
            )
        else:
            result, seconds = study_probe(ctx)
        scores = score_sum(result.importance(score), candidates)
        return Prediction(score, scores, seconds, {"tokens": result.meta.get("tokens")})

    return predict


def type_nfn(result: ProbeResult) -> dict[str, float]:
    """role -> the mean over layers of its NFN (PLoP's aggregation by module type)."""
    return result.role_summary("nfn")


def plop_scores(nfn: dict[str, float], candidates: list[Candidate]) -> dict[str, float]:
    """label -> minus the LoRA-parameter-weighted mean NFN of the types it adapts."""
    out: dict[str, float] = {}
    for c in candidates:
        spent: dict[str, float] = defaultdict(float)
        for m in c.modules:
            spent[str(m["role"])] += module_params(m)
        total = sum(spent[r] for r in spent if r in nfn)
        out[c.label] = (
            -sum(spent[r] * nfn[r] for r in spent if r in nfn) / total if total else -math.inf
        )
    return out


def _plop(ctx: Context, candidates: list[Candidate]) -> Prediction:
    samples = int(ctx.options.get("plop_samples", PLOP_SAMPLES))
    result, seconds = _probe(
        ctx,
        batches=math.ceil(samples / PLOP_BATCH),
        batch_size=PLOP_BATCH,
        gradients=False,
    )
    nfn = type_nfn(result)
    types = sorted(nfn, key=lambda r: (nfn[r], r))
    detail: dict[str, Any] = {
        "nfn_by_type": nfn,
        "pick": types[:PLOP_PICK],
        "sequences": result.meta.get("tokens", 0) // max(1, int(result.meta["block_size"])),
    }
    return Prediction("plop", plop_scores(nfn, candidates), seconds, detail)


for _name, _desc in (
    ("taylor", "sum over adapted (layer, role)s of the taylor probe score"),
    ("lora_grad", "sum over adapted (layer, role)s of the LoRA-gradient probe score"),
    ("out_norm", "sum over adapted (layer, role)s of the output-norm probe score"),
):
    register(PredictorInfo(_name, _desc, _probe_predictor(_name)))
register(
    PredictorInfo("plop", "PLoP: low normalised feature norm of the adapted module types", _plop)
)
