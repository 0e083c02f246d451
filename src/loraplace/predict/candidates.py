"""The placements a predictor ranks, and the context it ranks them in.

A finished study's candidates are its trained placements (``cells.py``). Here are the
candidates ``recommend`` has before anything is measured, from a budget alone: every
preset matched to the budget that fits it, random placements that spend it
(``budget/generated.py``), and the knapsack allocations of the taylor and lora_grad
probes (``budget/allocate.py``), as a study's generated entries.
"""

from __future__ import annotations

from loraplace.budget import allocate, match_budget
from loraplace.budget.generated import random_allocation
from loraplace.errors import UserError
from loraplace.placement import PRESETS, resolve
from loraplace.predict.base import Candidate, Context
from loraplace.predict.probes import study_probe

RANDOM_CANDIDATES = 3  # random placements of the budget among recommend's candidates


def budget_candidates(model: str, budget: int, arch) -> list[Candidate]:
    """Every preset that fits ``budget`` (matched to it), then random placements of it."""

    out: list[Candidate] = []
    for name in PRESETS:
        try:
            m = match_budget(name, arch, budget)
        except UserError:  # does not fit, or the model has no such modules
            continue
        if m.resolved.modules:
            out.append(Candidate(f"{name} r={m.spec.rank}", m.resolved.as_dicts()))
    for i in range(RANDOM_CANDIDATES):
        spec = random_allocation(arch, budget, seed=i, name=f"random-{i}")
        out.append(Candidate(spec.name or f"random-{i}", resolve(spec, arch).as_dicts()))
    seen: set[tuple] = set()
    unique = []
    for c in out:  # presets that resolve alike on this model (qkv, attention ...) once
        key = tuple(sorted((m["name"], m["rank"]) for m in c.modules))
        if key not in seen:
            seen.add(key)
            unique.append(c)
    return unique


ALLOCATED = ("taylor", "lora_grad")  # the allocations a study's generated entries name


def allocated_candidates(ctx: Context, arch) -> list[Candidate]:
    """The probe allocations of ``ctx.budget`` (one probe pass of 4 x 8 blocks, seed ctx.seed)."""

    result, _ = study_probe(ctx)
    out = []
    for score in ALLOCATED:
        rp = allocate(result.importance(score), arch, ctx.budget).resolved
        out.append(Candidate(f"allocated-{score}", rp.as_dicts(), rp.use_rslora))
    return out
