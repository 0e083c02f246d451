"""Which roles and layers matter: marginal gains read off nested placements.

Two placements A and B are *nested* when every module B adapts is adapted by A with the same
rank and alpha; the modules A adds, D = A \\ B, are then the only difference, so the paired
loss difference loss(B) - loss(A) is the marginal gain of D. Zero-shot is the empty
placement, so a single-role or single-layer-range placement is nested over it, and a
leave-one-out placement is nested under the placement it leaves one out of. D counts as
evidence for a *role* when it is all of A's modules of one role, and for a *layer range*
when it is everything A adapts on a contiguous range of layers (never the whole model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loraplace.analysis.aggregate import Estimate, PlacementSummary, Summary, _zs_loss_for, estimate
from loraplace.metrics import EVAL_LOSS

ZERO_SHOT = "zero-shot"


@dataclass(frozen=True)
class Module:
    name: str
    role: str
    layer: int | None
    rank: int
    alpha: float
    params: int  # rank * (in + out): the A and B matrices


def _modules(p: PlacementSummary) -> dict[str, Module]:
    out = {}
    for m in p.runs[0].modules:
        rank = int(m.get("rank") or 0)
        out[m["name"]] = Module(
            name=m["name"],
            role=str(m.get("role", "?")),
            layer=m.get("layer"),
            rank=rank,
            alpha=float(m.get("alpha") or 0.0),
            params=rank * (int(m.get("in_features") or 0) + int(m.get("out_features") or 0)),
        )
    return out


@dataclass(frozen=True)
class Comparison:
    """Adding ``unit`` to ``without`` gives ``with_``; gain is loss(without) - loss(with_)."""

    kind: str  # role | layers
    unit: str  # a role name, or a layer range "layers 0-5"
    with_: str
    without: str  # a placement, or "zero-shot"
    gain: Estimate  # nats over shared seeds; positive means the unit helps
    added_params: float
    cells: tuple[tuple[int, str], ...]  # the (layer, role) cells D adapts

    @property
    def per_mparam(self) -> float | None:
        return self.gain.mean / (self.added_params / 1e6) if self.added_params > 0 else None


@dataclass(frozen=True)
class Rank:
    """One role or layer range, its mean marginal gain and its ranks."""

    kind: str
    unit: str
    gain: float  # mean gain over its comparisons, nats
    per_mparam: float | None  # mean gain per million added params
    comparisons: tuple[Comparison, ...]
    rank_gain: int
    rank_per_param: int | None


@dataclass(frozen=True)
class Heatmap:
    layers: list[int]
    roles: list[str]
    values: np.ndarray  # [len(layers), len(roles)], NaN where no comparison covers a cell
    comparisons: int


@dataclass(frozen=True)
class Importance:
    roles: list[Rank]
    layers: list[Rank]
    heatmap: Heatmap | None

    @property
    def empty(self) -> bool:
        return not self.roles and not self.layers


def _layer_label(layers: list[int]) -> str:
    lo, hi = min(layers), max(layers)
    return f"layer {lo}" if lo == hi else f"layers {lo}-{hi}"


def _classify(a: dict[str, Module], d: dict[str, Module], all_layers: set[int]):
    """('role', name) / ('layers', label) when D is one role or one layer range of A."""
    out = []
    roles = {m.role for m in d.values()}
    d_layers = {m.layer for m in d.values() if m.layer is not None}
    # A role counts when D is all of A's modules of that role (wherever they sit, lm_head too).
    if len(roles) == 1 and set(d) == {n for n, m in a.items() if m.role in roles}:
        out.append(("role", next(iter(roles))))
    a_on_range = {n for n, m in a.items() if m.layer in d_layers}
    contiguous = d_layers and max(d_layers) - min(d_layers) + 1 == len(d_layers)
    if contiguous and a_on_range == set(d) and d_layers != all_layers:
        out.append(("layers", _layer_label(sorted(d_layers))))
    return out


def comparisons(summary: Summary) -> list[Comparison]:
    """Every nested pair whose difference is one role or one layer range."""
    mods = {p.placement: _modules(p) for p in summary.placements if p.kind == "lora"}
    by_name = {p.placement: p for p in summary.placements}
    all_layers = {m.layer for ms in mods.values() for m in ms.values() if m.layer is not None}
    out = []
    bases: list[tuple[str, dict[str, Module]]] = [(n, m) for n, m in mods.items()]
    if summary.zero_shot is not None:
        bases.append((ZERO_SHOT, {}))
    for a_name, a in mods.items():
        if not a:
            continue
        for b_name, b in bases:
            if b_name == a_name or len(b) >= len(a):
                continue
            if any(
                n not in a or (a[n].rank, a[n].alpha) != (m.rank, m.alpha) for n, m in b.items()
            ):
                continue
            d = {n: m for n, m in a.items() if n not in b}
            kinds = _classify(a, d, all_layers)
            if not kinds:
                continue
            gain = _paired_gain(by_name[a_name], by_name.get(b_name), summary)
            if gain is None:
                continue
            cells = tuple(sorted((m.layer, m.role) for m in d.values() if m.layer is not None))
            added = float(sum(m.params for m in d.values()))
            for kind, unit in kinds:
                out.append(Comparison(kind, unit, a_name, b_name, gain, added, cells))
    return out


def _paired_gain(a: PlacementSummary, b: PlacementSummary | None, summary: Summary):
    if b is None:  # zero-shot: each run's own base-model measurement
        vals = [
            z - r.metrics[EVAL_LOSS]
            for r in a.runs
            if (z := _zs_loss_for(r, summary.zero_shot)) is not None
        ]
        return estimate(vals)
    a_s, b_s = a.loss_by_seed, b.loss_by_seed
    return estimate(b_s[s] - a_s[s] for s in sorted(set(a_s) & set(b_s)))


def _rank(kind: str, comps: list[Comparison]) -> list[Rank]:
    units: dict[str, list[Comparison]] = {}
    for c in comps:
        if c.kind == kind:
            units.setdefault(c.unit, []).append(c)
    rows = []
    for unit, cs in units.items():
        per = [c.per_mparam for c in cs if c.per_mparam is not None]
        rows.append(
            (
                unit,
                float(np.mean([c.gain.mean for c in cs])),
                float(np.mean(per)) if per else None,
                cs,
            )
        )
    by_gain = sorted(rows, key=lambda r: -r[1])
    by_param = sorted((r for r in rows if r[2] is not None), key=lambda r: -r[2])  # type: ignore[operator]
    param_rank = {r[0]: i + 1 for i, r in enumerate(by_param)}
    return [
        Rank(kind, unit, gain, per, tuple(cs), i + 1, param_rank.get(unit))
        for i, (unit, gain, per, cs) in enumerate(by_gain)
    ]


def _heatmap(comps: list[Comparison]) -> Heatmap | None:
    """Gain per adapted module, spread evenly over the cells of each comparison's D.

    Drawn only when some comparison stops short of the full layer range: otherwise every
    layer of a role would show the same number, which says nothing about layers.
    """
    # A pair may be listed twice (as a role and as a layer range): count it once.
    uniq = list({(c.with_, c.without): c for c in comps if c.cells}.values())
    cells: dict[tuple[int, str], list[float]] = {}
    for c in uniq:
        for cell in c.cells:
            cells.setdefault(cell, []).append(c.gain.mean / len(c.cells))
    layers = sorted({lr for lr, _ in cells})
    roles = sorted({r for _, r in cells})
    if len(layers) < 2 or len(roles) < 2:
        return None
    full = set(layers)
    if all({lr for lr, _ in c.cells} == full for c in uniq):
        return None
    vals = np.full((len(layers), len(roles)), np.nan)
    for (lr, r), v in cells.items():
        vals[layers.index(lr), roles.index(r)] = float(np.mean(v))
    return Heatmap(layers, roles, vals, len(uniq))


def importance(summary: Summary) -> Importance:
    comps = comparisons(summary)
    return Importance(_rank("role", comps), _rank("layers", comps), _heatmap(comps))
