"""Budgeted allocation: choose (layer, role, rank) from importance scores under a budget.

The value of adapting a (layer, role) at rank r is taken as ``s * log2(1 + r)``: it grows
with the score ``s`` and with the rank, with diminishing returns (doubling the rank buys
less than the first few ranks did). Each (layer, role) climbs a ladder of ranks; a step
(absent -> smallest rank, or one rung up) has a gain in value and a cost in exact adapter
parameters. The greedy takes the step with the best gain per parameter while it fits,
drops a (layer, role) once its next step no longer fits, and stops when nothing fits:
the classic greedy for a knapsack with concave values. The result is an ordinary
``PlacementSpec`` (explicit module names, per-module ranks) that plans, runs and exports
like any other.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field

from loraplace.arch import ArchInfo, ModuleInfo
from loraplace.budget.matching import parse_budget
from loraplace.errors import UserError
from loraplace.placement.resolve import ResolvedPlacement, _arch_of, resolve
from loraplace.placement.spec import AlphaRule, PlacementSpec

Key = tuple[int, str]
DEFAULT_RANKS = (2, 4, 8, 16)


@dataclass
class Allocation:
    """An allocation with its bookkeeping: what was chosen, what it costs, its value."""

    spec: PlacementSpec
    resolved: ResolvedPlacement
    budget: int
    ranks: dict[Key, int]  # chosen rank per (layer, role)
    value: float  # sum of s * log2(1 + r) over the chosen keys
    skipped: list[Key] = field(default_factory=list)  # keys with a zero score

    @property
    def achieved(self) -> int:
        return self.resolved.trainable_params

    def to_json(self) -> dict:
        return {
            "placement": self.spec.label(),
            "budget": self.budget,
            "achieved": self.achieved,
            "deviation": self.achieved - self.budget,
            "value": self.value,
            "ranks": [
                {"layer": k[0], "role": k[1], "rank": r} for k, r in sorted(self.ranks.items())
            ],
            "spec": self.spec.model_dump(exclude_defaults=True),
        }


def layer_role_groups(arch: ArchInfo) -> dict[Key, list[ModuleInfo]]:
    """The modules of every (layer, role) inside the blocks: the units of allocation."""
    groups: dict[Key, list[ModuleInfo]] = {}
    for m in arch.modules:
        if m.layer is not None and m.tower == "language":  # a vision block is not a layer
            groups.setdefault((m.layer, m.role), []).append(m)
    return groups


def cost_per_rank(modules: list[ModuleInfo]) -> int:
    """Adapter parameters one rank costs on these modules: sum of in + out (per expert)."""
    return sum(m.experts * (m.in_features + m.out_features) for m in modules)


def rungs_for(modules: list[ModuleInfo], ladder: list[int]) -> list[int]:
    """The ranks of the ladder these modules can take (no more than their smaller side)."""
    cap = min(min(m.in_features, m.out_features) for m in modules)
    return [r for r in ladder if r <= cap]


def spec_from_ranks(
    arch: ArchInfo,
    groups: dict[Key, list[ModuleInfo]],
    chosen: dict[Key, int],
    *,
    name: str,
    alpha: float | None = None,
    alpha_rule: AlphaRule | None = None,
) -> PlacementSpec:
    """A spec adapting every module of the chosen (layer, role)s at its rank: explicit
    module names, the most common rank as ``rank`` and the others in ``module_rank``."""
    names = {m.name: r for k, r in chosen.items() for m in groups[k]}
    ordered = [m.name for m in arch.modules if m.name in names]
    base = Counter(names.values()).most_common(1)[0][0]
    return PlacementSpec(
        name=name,
        target_modules=ordered,
        rank=base,
        module_rank={nm: r for nm, r in names.items() if r != base},
        alpha=alpha,
        alpha_rule=alpha_rule,
    )


def _value(score: float, rank: int) -> float:
    return score * math.log2(1 + rank)


def _checked_scores(scores: dict[Key, float], groups: dict, arch: ArchInfo) -> dict[Key, float]:
    """The scores keyed (int layer, str role), each naming a (layer, role) of ``arch``."""
    scores = {(int(k[0]), str(k[1])): float(v) for k, v in scores.items()}
    unknown = [k for k in scores if k not in groups]
    if unknown:
        raise UserError(
            f"score for layer {unknown[0][0]} role {unknown[0][1]!r} names no module of "
            f"{arch.family}: probe this model to get its (layer, role) keys"
        )
    bad = [k for k, s in scores.items() if not math.isfinite(s) or s < 0]
    if bad:
        raise UserError(
            f"score of {bad[0]} is {scores[bad[0]]}: allocation needs finite scores >= 0"
        )
    return scores


def allocate(
    scores: dict[Key, float],
    target,
    budget: int | str,
    *,
    ranks: tuple[int, ...] = DEFAULT_RANKS,
    score_per_param: bool = True,
    name: str = "allocated",
    alpha: float | None = None,
    alpha_rule: AlphaRule | None = None,
) -> Allocation:
    """The placement spending at most ``budget`` on the (layer, role)s that score best.

    Args:
        scores: (layer, role) -> importance, higher meaning 'adapt here' (use
            ``ProbeResult.importance(name)``, which inverts scores such as nfn).
        target: ArchInfo, nn.Module, config or model reference.
        budget: see ``loraplace.budget.parse_budget``.
        ranks: the rank ladder each (layer, role) may climb.
        score_per_param: rank steps by value gained per adapter parameter (knapsack
            density); False ranks them by value alone, whatever they cost.

    Returns the Allocation: the spec, the chosen ranks, their value and the resolved
    placement.
    """
    arch: ArchInfo = _arch_of(target)
    n = parse_budget(budget, arch)
    ladder = sorted({int(r) for r in ranks})
    if not ladder or ladder[0] < 1:
        raise UserError(f"invalid rank ladder {ranks!r}: give positive ranks, e.g. 2,4,8,16")

    groups = layer_role_groups(arch)
    scores = _checked_scores(scores, groups, arch)

    order = {k: i for i, k in enumerate(sorted(groups))}
    cost1 = {k: cost_per_rank(groups[k]) for k in groups}
    rungs = {k: rungs_for(groups[k], ladder) for k in scores}
    skipped = sorted(k for k, s in scores.items() if s <= 0)

    heap: list[tuple[float, int, Key, int]] = []

    def push(k: Key, step: int) -> None:
        """Offer step ``step`` of key k: rung index step-1 -> step (step 0: add it)."""
        if step >= len(rungs[k]):
            return
        prev = rungs[k][step - 1] if step else 0
        gain = _value(scores[k], rungs[k][step]) - _value(scores[k], prev)
        cost = cost1[k] * (rungs[k][step] - prev)
        prio = gain / cost if score_per_param else gain
        heapq.heappush(heap, (-prio, order[k], k, step))

    for k, s in scores.items():
        if s > 0:
            push(k, 0)
    chosen: dict[Key, int] = {}
    left = n
    while heap:
        _, _, k, step = heapq.heappop(heap)
        prev = rungs[k][step - 1] if step else 0
        cost = cost1[k] * (rungs[k][step] - prev)
        if cost > left:
            continue  # its next rung can only cost more: this key stops here
        left -= cost
        chosen[k] = rungs[k][step]
        push(k, step + 1)
    if not chosen:
        smallest = min((cost1[k] * rungs[k][0] for k in scores if rungs[k]), default=0)
        raise UserError(
            f"budget of {n:,} params fits no module even at rank {ladder[0]} (the cheapest "
            f"costs {smallest:,}): raise the budget or give a smaller rank"
        )

    spec = spec_from_ranks(arch, groups, chosen, name=name, alpha=alpha, alpha_rule=alpha_rule)
    rp = resolve(spec, arch)
    assert rp.trainable_params == n - left <= n, "allocation accounting disagrees with resolve"
    value = sum(_value(scores[k], r) for k, r in chosen.items())
    return Allocation(spec, rp, n, dict(sorted(chosen.items())), value, skipped)
