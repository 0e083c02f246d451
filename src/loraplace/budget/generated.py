"""Placements a study generates at its budget: allocated from probes, or drawn at random.

A study's ``placements:`` list may hold, next to presets and specs, two kinds of entry
that only make sense with a ``budget:``:

- ``{name: probe-taylor, allocate: taylor}``: the knapsack allocation
  (``loraplace.budget.allocate``) of the study's probe scores (``probe:`` settings) on the
  study's own model and train data: what ``loraplace recommend`` proposes before anything
  is measured, run here so that it can be measured.
- ``{name: random, random: 5, seed: 0}``: five random placements of the same budget, the
  baseline an allocation has to beat. Each visits the (layer, role)s in a seeded random
  order and gives each a random rung of the rank ladder, lowered until it fits, skipping
  those that do not fit at the lowest rung: every one spends the budget about as fully
  as the allocation does, with no knowledge of the model.

Both resolve to ordinary specs with explicit module names and per-module ranks, so the
runs they produce are ordinary runs, identified by their modules like any other.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from loraplace.budget.allocate import (
    allocate,
    cost_per_rank,
    layer_role_groups,
    rungs_for,
    spec_from_ranks,
)
from loraplace.errors import UserError
from loraplace.placement.resolve import _arch_of
from loraplace.placement.spec import AlphaRule, PlacementSpec
from loraplace.probe.result import SCORES

Key = tuple[int, str]
LADDER = (1, 2, 4, 8, 16)


class _Generated(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ranks: list[int] = Field(default_factory=lambda: list(LADDER))  # the rank ladder
    alpha: float | None = None
    alpha_rule: AlphaRule | None = None

    @field_validator("ranks")
    @classmethod
    def _positive(cls, v):
        if not v or min(v) < 1:
            raise ValueError("ranks must be a non-empty list of positive ranks, e.g. [1, 2, 4]")
        return sorted(set(v))


class AllocateEntry(_Generated):
    """``{name, allocate: SCORE, per_param}``: allocated from the study's probe."""

    name: str | None = None
    allocate: str  # probe score: taylor | lora_grad | nfn | out_norm
    score_per_param: bool = True  # knapsack density (value per adapter parameter)

    def label(self) -> str:
        return self.name or f"allocated-{self.allocate}"


class RandomEntry(_Generated):
    """``{name, random: N, seed}``: N random placements of the budget."""

    name: str = "random"
    random: int  # how many
    seed: int = 0

    @field_validator("random")
    @classmethod
    def _count(cls, v):
        if v < 1:
            raise ValueError("random must be the number of random placements, at least 1")
        return v

    def labels(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(self.random)]


GeneratedEntry = AllocateEntry | RandomEntry


def parse_generated(entry: Any) -> GeneratedEntry | None:
    """The entry as an allocate/random entry, or None when it is an ordinary placement."""
    if not isinstance(entry, dict) or not ({"allocate", "random"} & set(entry)):
        return None
    if "allocate" in entry and "random" in entry:
        raise UserError(f"placement {entry!r} has both allocate and random: give one")
    cls = AllocateEntry if "allocate" in entry else RandomEntry
    try:
        parsed = cls.model_validate(entry)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "entry"
        raise UserError(f"placement {entry!r}: {where}: {err['msg']}") from None
    if isinstance(parsed, AllocateEntry):
        if parsed.allocate not in SCORES:
            raise UserError(
                f"placement {entry!r}: unknown probe score {parsed.allocate!r}: use one of "
                + ", ".join(SCORES)
            )
    return parsed


def generated_labels(entries: list[Any]) -> dict[str, str]:
    """label -> origin ("allocated:SCORE" or "random") for a study's generated entries."""
    out: dict[str, str] = {}
    for e in entries:
        g = parse_generated(e)
        if isinstance(g, AllocateEntry):
            out[g.label()] = f"allocated:{g.allocate}"
        elif isinstance(g, RandomEntry):
            out.update({lbl: "random" for lbl in g.labels()})
    return out


def random_allocation(
    target,
    budget: int,
    *,
    seed: int,
    ranks: tuple[int, ...] | list[int] = LADDER,
    name: str = "random",
    alpha: float | None = None,
    alpha_rule: AlphaRule | None = None,
) -> PlacementSpec:
    """A random placement spending at most ``budget`` (see the module docstring)."""
    arch = _arch_of(target)
    groups = layer_role_groups(arch)
    rng = _random.Random(seed)
    keys = sorted(groups)
    rng.shuffle(keys)
    ladder = sorted(set(ranks))
    left = budget
    chosen: dict[Key, int] = {}
    for k in keys:
        cost1 = cost_per_rank(groups[k])
        rungs = rungs_for(groups[k], ladder)
        if not rungs:
            continue
        i = rng.randrange(len(rungs))
        while i >= 0 and cost1 * rungs[i] > left:
            i -= 1
        if i < 0:
            continue
        chosen[k] = rungs[i]
        left -= cost1 * rungs[i]
    if not chosen:
        raise UserError(
            f"budget of {budget:,} params fits no module even at rank {ladder[0]}: "
            "raise the budget or add a smaller rank to ranks"
        )
    return spec_from_ranks(arch, groups, chosen, name=name, alpha=alpha, alpha_rule=alpha_rule)


def generate(
    entry: GeneratedEntry,
    target,
    budget: int,
    scores: Callable[[str], dict[Key, float]],
) -> list[PlacementSpec]:
    """The specs an entry stands for.

    Args:
        scores: score name -> (layer, role) -> importance, from the study's probe; called
            only for allocate entries (the probe costs a few forward/backward passes).
    """
    if isinstance(entry, RandomEntry):
        return [
            random_allocation(
                target,
                budget,
                seed=entry.seed * 1000 + i,
                ranks=entry.ranks,
                name=label,
                alpha=entry.alpha,
                alpha_rule=entry.alpha_rule,
            )
            for i, label in enumerate(entry.labels())
        ]
    return [
        allocate(
            scores(entry.allocate),
            target,
            budget,
            ranks=tuple(entry.ranks),
            score_per_param=entry.score_per_param,
            name=entry.label(),
            alpha=entry.alpha,
            alpha_rule=entry.alpha_rule,
        ).spec
    ]
