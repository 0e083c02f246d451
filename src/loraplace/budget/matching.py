"""Equal-budget rank matching: the rank (or per-role ranks) that spends a parameter budget.

A comparison of placements at different parameter counts answers the wrong question, so
a study can give every placement the same budget. Each placement then gets the largest
rank whose *exact* trainable count (from shapes, see ``loraplace.placement``) does not
exceed it; with ``per_role`` the leftover is spent by raising single roles one step.

With DoRA, each module's magnitude vector (its output size, whatever the rank) is spent
from the budget first; the ranks share what is left.

Budgets are parameter counts (``1966080``, ``"2M"``, ``"1.5k"``), a percentage
(``"0.55%"``) or the count of another placement at a rank (``"seed-ffn@r16"``: the
seed-ffn budget on whatever model the study uses).

Percent convention: PEFT's, the one ``ResolvedPlacement.trainable_pct`` and the seed
study print: ``pct = trainable / (base + trainable) x 100``. The seed's own table only
fits this one (6,291,456 on GPT-2 medium is 1.74 % this way, 1.77 % of base alone), so
``"p%"`` means the largest count ``B`` with ``B / (base + B) <= p / 100``. Note that a
rounded percentage is a rounded budget: "0.55%" of GPT-2 medium is 1,962,320 params,
*below* seed-ffn's 1,966,080 at r=16; write ``"seed-ffn@r16"`` for the exact figure.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from loraplace.arch import ArchInfo
from loraplace.errors import UserError
from loraplace.placement.resolve import ResolvedPlacement, _arch_of, resolve
from loraplace.placement.spec import PlacementSpec, parse_placement

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}


def parse_budget(budget: int | float | str, target) -> int:
    """A budget in trainable parameters, from a count, ``"2M"``, ``"0.55%"`` or ``"p@rN"``.

    Args:
        target: the model the budget is for (ArchInfo, nn.Module, config or model
            reference): percentages and placement references depend on it.
    """
    if isinstance(budget, bool):
        raise UserError(f"invalid budget {budget!r}: give a parameter count or a percentage")
    if isinstance(budget, int):
        n = budget
    elif isinstance(budget, float):
        if not budget.is_integer():
            raise UserError(f"budget {budget} is not a whole number of parameters")
        n = int(budget)
    else:
        n = _parse_budget_text(str(budget), target)
    if n < 1:
        raise UserError(f"budget {budget!r} is {n} parameters: give a positive budget")
    return n


def _parse_budget_text(text: str, target) -> int:
    s = text.strip().replace(",", "").replace("_", "")
    at = re.fullmatch(r"(.+)@r(\d+)", s)
    if at:
        # The count of a placement at a rank, on this model: "seed-ffn@r16".
        return resolve(at.group(1), _arch_of(target), rank=int(at.group(2))).trainable_params
    pct = re.fullmatch(r"(\d+(?:\.\d+)?|\.\d+)\s*%", s)
    if pct:
        p = float(pct.group(1)) / 100.0
        if not 0.0 < p < 1.0:
            raise UserError(f"budget {text!r}: a percentage must lie between 0 and 100")
        base = _arch_of(target).base_params
        # PEFT's convention: B / (base + B) = p  =>  B = p * base / (1 - p).
        return math.floor(p * base / (1.0 - p) + 1e-9)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmMgGbB]?)", s)
    if not m:
        raise UserError(
            f"invalid budget {text!r}: give a parameter count (1966080, 2M, 1.5k), a "
            "percentage of the model (0.55%) or a placement at a rank (seed-ffn@r16)"
        )
    value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if not value.is_integer():
        raise UserError(f"budget {text!r} is not a whole number of parameters")
    return int(value)


@dataclass(frozen=True)
class BudgetMatch:
    """One placement matched to a budget: the spec to run and how close it came."""

    spec: PlacementSpec
    resolved: ResolvedPlacement
    budget: int

    @property
    def achieved(self) -> int:
        return self.resolved.trainable_params

    @property
    def deviation(self) -> int:
        """achieved - budget: zero or negative, never positive."""
        return self.achieved - self.budget

    @property
    def deviation_pct(self) -> float:
        return 100.0 * self.deviation / self.budget

    def to_json(self) -> dict:
        return {
            "placement": self.resolved.name,
            "budget": self.budget,
            "achieved": self.achieved,
            "deviation": self.deviation,
            "deviation_pct": self.deviation_pct,
            "rank": self.spec.rank,
            "role_rank": dict(self.spec.role_rank),
            "trainable_pct": self.resolved.trainable_pct,
        }


def match_budget(
    spec: str | dict | PlacementSpec,
    target,
    budget: int | str,
    *,
    per_role: bool = False,
    max_rank: int | None = None,
    use_dora: bool = False,
) -> BudgetMatch:
    """The spec at the rank bringing its exact trainable count closest to ``budget``, not above.

    Args:
        target: ArchInfo, nn.Module (meta is fine), config or model reference.
        budget: see ``parse_budget``.
        per_role: after the largest uniform rank r, spend the leftover by raising single
            roles one rank step at a time (largest role first, round after round) until no
            role can take one more step; ranks stay within a step or so of r.
        max_rank: cap on any rank (default: the smallest dimension of the modules).
        use_dora: DoRA's magnitudes (one per output feature of each module, whatever the
            rank) are spent from the budget first; the ranks share what is left.

    The spec's own ``rank`` is replaced; a spec with role/layer/module rank overrides is
    refused, since those ranks would not move with the budget. Returns the BudgetMatch:
    the matched spec, its resolved placement, the budget, achieved count and deviation.
    """
    spec = parse_placement(spec)
    arch: ArchInfo = _arch_of(target)
    n = parse_budget(budget, arch)
    label = spec.label()
    if spec.role_rank or spec.layer_rank or getattr(spec, "module_rank", None):
        raise UserError(
            f"placement {label!r} sets its own per-role/layer/module ranks: budget matching "
            "chooses ranks itself, so remove them (or leave this placement out of the budget)"
        )
    # Rank 1 costs sum(in + out) over the modules; every count is linear in the ranks.
    unit = resolve(spec.model_copy(update={"rank": 1}), arch)
    dora_unit = resolve(spec.model_copy(update={"rank": 1}), arch, use_dora=use_dora)
    fixed = dora_unit.trainable_params - unit.trainable_params
    for_ranks = n - fixed  # DoRA's magnitudes do not grow with the rank
    cap = min(min(m.in_features, m.out_features) for m in unit.modules)
    if max_rank is not None:
        cap = min(cap, max_rank)
    r = min(max(0, for_ranks) // unit.trainable_params, cap)
    if r < 1:
        raise UserError(
            f"budget of {n:,} params is below placement {label!r} at rank 1 "
            f"({unit.trainable_params + fixed:,} params): raise the budget or adapt fewer "
            "modules"
        )
    role_rank: dict[str, int] = {}
    if per_role:
        role_cost: dict[str, int] = {}
        role_cap: dict[str, int] = {}
        for mod in unit.modules:
            role_cost[mod.role] = role_cost.get(mod.role, 0) + mod.params
            lim = min(mod.in_features, mod.out_features)
            role_cap[mod.role] = min(role_cap.get(mod.role, lim), lim)
        if max_rank is not None:
            role_cap = {k: min(v, max_rank) for k, v in role_cap.items()}
        ranks = dict.fromkeys(role_cost, r)
        left = for_ranks - r * unit.trainable_params
        # Largest role first, so the big steps are taken while the leftover allows them.
        order = sorted(role_cost, key=lambda k: (-role_cost[k], k))
        stepped = True
        while stepped:
            stepped = False
            for role in order:
                if ranks[role] < role_cap[role] and role_cost[role] <= left:
                    ranks[role] += 1
                    left -= role_cost[role]
                    stepped = True
        role_rank = {k: v for k, v in ranks.items() if v != r}
    matched = spec.model_copy(update={"rank": r, "role_rank": role_rank})
    rp = resolve(matched, arch, use_dora=use_dora)
    assert rp.trainable_params <= n, "budget matching overshot: accounting is not linear?"
    return BudgetMatch(matched, rp, n)


def match_all(
    specs: list[str | dict | PlacementSpec],
    target,
    budget: int | str,
    *,
    per_role: bool = False,
) -> list[BudgetMatch]:
    """Every placement matched to one budget (the study's ``budget:`` key)."""
    arch = _arch_of(target)
    n = parse_budget(budget, arch)
    return [match_budget(s, arch, n, per_role=per_role) for s in specs]
