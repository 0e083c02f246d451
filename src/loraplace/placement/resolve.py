"""Resolution of a placement spec against a model into one explicit module list.

Training, parameter accounting and every export read this one list, so they cannot
disagree. Accounting needs shapes only: a LoRA adapter on a (in -> out) layer adds
``r x (in + out)`` parameters (A is r x in, B is out x r).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from importlib.metadata import version

from loraplace.arch import EXPERT_ROLES, ArchInfo, ModuleInfo, describe, meta_from_config
from loraplace.errors import UserError
from loraplace.models import load_config
from loraplace.placement.peft_limits import mamba_refused, rewritten_targets
from loraplace.placement.spec import PlacementSpec, parse_placement, select_layers

DEFAULT_RANK = 8


@dataclass(frozen=True)
class AdaptedModule:
    """One module that receives an adapter, with its size."""

    name: str
    role: str
    layer: int | None
    in_features: int
    out_features: int
    rank: int
    alpha: float
    kind: str = "linear"  # "param": adapted through PEFT's target_parameters
    tower: str = "language"
    experts: int = 1  # experts in one fused 3-D parameter: each gets its own r x (in + out)

    @property
    def params(self) -> int:
        return self.rank * self.experts * (self.in_features + self.out_features)


@dataclass
class ResolvedPlacement:
    """A placement resolved against one model."""

    name: str
    modules: list[AdaptedModule]
    base_params: int
    n_layers: int
    family: str
    use_rslora: bool = False
    warnings: list[str] = field(default_factory=list)
    use_dora: bool = False  # DoRA: one trainable magnitude per output feature of each module

    @property
    def trainable_params(self) -> int:
        return sum(m.params + self.dora_params(m) for m in self.modules)

    def dora_params(self, m: AdaptedModule) -> int:
        """DoRA's magnitude vector of one module (0 without DoRA)."""
        return m.out_features if self.use_dora else 0

    @property
    def trainable_pct(self) -> float:
        """PEFT's convention: trainable / (base + adapter) x 100."""
        total = self.base_params + self.trainable_params
        return 100.0 * self.trainable_params / total if total else 0.0

    def by_role(self) -> dict[str, dict]:
        """role -> {modules, params, layers, paths}; other towers' roles as "vision:attn.q"."""
        out: dict[str, dict] = {}
        for m in self.modules:
            key = m.role if m.tower == "language" else f"{m.tower}:{m.role}"
            r = out.setdefault(key, {"modules": 0, "params": 0, "layers": set(), "paths": set()})
            r["modules"] += 1
            r["params"] += m.params + self.dora_params(m)
            if m.layer is not None:
                r["layers"].add(m.layer)
            r["paths"].add(_leaf_path(m.name))
        return out

    def as_dicts(self) -> tuple[dict, ...]:
        """Plain dicts; fields at their default are left out so run ids of dense models stay."""
        return tuple(_plain(m) for m in self.modules)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "trainable_params": self.trainable_params,
            "base_params": self.base_params,
            "trainable_pct": self.trainable_pct,
            "use_rslora": self.use_rslora,
            "use_dora": self.use_dora,
            "by_role": {
                role: {
                    "modules": v["modules"],
                    "params": v["params"],
                    "layers": sorted(v["layers"]),
                    "paths": sorted(v["paths"]),
                }
                for role, v in self.by_role().items()
            },
            "warnings": self.warnings,
            "modules": [asdict(m) for m in self.modules],
        }


_NEW_FIELD_DEFAULTS = {"tower": "language", "experts": 1}


def _plain(m: AdaptedModule) -> dict:
    d = asdict(m)
    for key, default in _NEW_FIELD_DEFAULTS.items():
        if d[key] == default:
            del d[key]
    return d


def _leaf_path(name: str) -> str:
    """'transformer.h.3.attn.c_proj' -> 'attn.c_proj' (the path inside a block)."""
    m = re.search(r"\.\d+\.(.+)$", name)
    return m.group(1) if m else name


def _arch_of(target) -> ArchInfo:
    if isinstance(target, ArchInfo):
        return target
    from torch import nn  # lazily: placements are read and written without torch

    if isinstance(target, nn.Module):
        return describe(target)

    if isinstance(target, str):
        config = load_config(target)
    else:
        config = target
    return describe(meta_from_config(config), config)


def _match_targets(spec: PlacementSpec, modules: list[ModuleInfo]) -> dict[str, list[ModuleInfo]]:
    """target pattern -> matched adaptable modules, with PEFT's semantics."""
    tm = spec.target_modules
    if isinstance(tm, str):
        try:
            rx = re.compile(tm)
        except re.error as exc:
            raise UserError(f"target_modules regex {tm!r} does not compile ({exc})") from None
        return {tm: [m for m in modules if rx.fullmatch(m.name)]}
    out: dict[str, list[ModuleInfo]] = {}
    for t in tm or []:
        out[t] = [m for m in modules if m.name == t or m.name.endswith("." + t)]
    return out


def _by_roles(spec: PlacementSpec, arch: ArchInfo, label: str, warnings: list[str]):
    """The modules of the spec's roles in its tower (all-linear: linear layers only)."""
    if spec.tower == "language" and not arch.known:
        raise UserError(
            f"cannot read module roles of architecture {arch.family!r}: name the modules "
            "with target_modules patterns instead (see `loraplace inspect`)"
        )
    if not any(m.tower == spec.tower for m in arch.modules):
        raise UserError(f"{arch.family} has no {spec.tower} tower: use tower: language")
    wanted = set(spec.roles or [])
    chosen = [
        m
        for m in arch.modules
        if m.tower == spec.tower
        and (m.role in wanted or (spec.include_other and m.role == "other" and m.layer is not None))
    ]
    skipped = [m for m in chosen if m.kind == "param"] if spec.linear_only else []
    if skipped:
        chosen = [m for m in chosen if m.kind != "param"]
        warnings.append(
            f"{label} skips {len(skipped)} fused expert tensor(s) "
            f"({'/'.join(sorted({_leaf_path(m.name) for m in skipped}))}, "
            f"{sum(m.experts * (m.in_features + m.out_features) for m in skipped):,} adapter "
            "params per rank): they are 3-D parameters, not linear layers, so PEFT's "
            "all-linear leaves every routed expert untrained; use preset all or role moe"
        )
    routers = [m for m in arch.modules if m.role == "moe.router" and m.kind != "param"]
    if spec.linear_only and routers and spec.tower == "language":
        warnings.append(
            f"PEFT's own target_modules='all-linear' would also adapt {len(routers)} router "
            f"linear(s) ({_leaf_path(routers[0].name)}); {label} leaves routers out"
        )
    if not chosen:
        raise UserError(
            f"placement {label!r} matches no module of {arch.family}{_roles_hint(wanted, arch)}: "
            f"its roles are {', '.join(arch.roles(spec.tower))}"
        )
    return chosen


def _roles_hint(wanted: set[str], arch: ArchInfo) -> str:
    roles = arch.roles()
    if wanted & {"attn.q", "attn.v", "attn.k"} and "attn.qkv" in roles:
        return f" ({arch.family} fuses q, k and v into attn.qkv: use qkv or attention)"
    if wanted & {"moe.gate", "moe.up"} and "moe.gate_up" in roles:
        return f" ({arch.family} fuses the experts' gate and up into moe.gate_up)"
    return ""


def _by_patterns(spec: PlacementSpec, arch: ArchInfo, label: str, warnings: list[str]):
    """PEFT target_modules semantics over every tower; ambiguities become warnings."""
    candidates = [m for m in arch.modules if m.kind != "param"]  # patterns never reach params
    matches = _match_targets(spec, candidates)
    empty = [t for t, ms in matches.items() if not ms]
    if empty:
        examples = sorted({_leaf_path(m.name) for m in candidates})[:8]
        raise UserError(
            f"target {empty[0]!r} of placement {label!r} matches no linear layer of "
            f"{arch.family}: module paths are e.g. {', '.join(examples)}"
        )
    fused = [m for m in arch.modules if m.kind == "param" and m.role in EXPERT_ROLES]
    for t, ms in matches.items():
        roles = Counter(m.role for m in ms)
        if len(roles) > 1:
            detail = ", ".join(f"{n} {_paths_of(ms, r)} ({r})" for r, n in sorted(roles.items()))
            warnings.append(
                f"{t!r} matches modules of {len(roles)} roles: {detail}; "
                "use roles or a full path to adapt only one"
            )
        towers = Counter(m.tower for m in ms)
        if set(towers) - {spec.tower}:
            detail = ", ".join(f"{n} {tw}" for tw, n in sorted(towers.items()))
            warnings.append(
                f"{t!r} reaches beyond the {spec.tower} tower: it matches {detail} modules; "
                "use roles with tower: (language, vision, projector) or full paths"
            )
        missed = [m for m in fused if m.name.endswith("." + t)]
        if missed:
            warnings.append(
                f"{t!r} does not reach the {len(missed)} fused expert tensor(s) named "
                f"{_leaf_path(missed[0].name)} (target_modules never matches a parameter): "
                f"add role {missed[0].role} or use preset all"
            )
    names = {m.name for ms in matches.values() for m in ms}
    return [m for m in candidates if m.name in names]


def _select_experts(chosen: list[ModuleInfo], selector: str, family: str) -> list[ModuleInfo]:
    """Keep the routed experts the selector names; other roles pass through."""
    sel = str(selector).strip().lower()
    if sel in ("all", "", "*"):
        return chosen
    if sel.startswith("top:"):
        raise UserError(
            f"expert selector {selector!r} needs routing counts per expert, which loraplace "
            "does not measure yet: name the experts (e.g. 0-7) or use experts: all"
        )
    routed = [m for m in chosen if m.role in EXPERT_ROLES]
    fused = [m for m in routed if m.kind == "param"]
    if fused:
        raise UserError(
            f"expert selector {selector!r} cannot be applied to {family}: its experts are "
            f"fused 3-D tensors ({_leaf_path(fused[0].name)}) and PEFT's target_parameters "
            f"adapts all {fused[0].experts} of them; use experts: all"
        )
    if not routed:
        raise UserError(f"expert selector {selector!r} is set but no routed expert is adapted")
    keep = set(select_layers(selector, max(m.expert or 0 for m in routed) + 1))
    return [m for m in chosen if m.role not in EXPERT_ROLES or m.expert in keep]


def _coverage_warnings(arch: ArchInfo, chosen: list[ModuleInfo], tower: str) -> list[str]:
    """A path adapted in some of the layers that have it, and not the others."""
    exists: dict[str, set[int]] = defaultdict(set)
    for m in arch.modules:
        if m.layer is not None and m.tower == tower:
            exists[_leaf_path(m.name)].add(m.layer)
    per_path: dict[str, set[int]] = defaultdict(set)
    for m in chosen:
        if m.layer is not None and m.tower == tower:
            per_path[_leaf_path(m.name)].add(m.layer)
    return [
        f"{path!r} is adapted in {len(ls)} of {len(exists[path])} layers only "
        f"({_ranges(sorted(ls))})"
        for path, ls in per_path.items()
        if len(ls) < len(exists[path])
    ]


def _sized(
    chosen: list[ModuleInfo], spec: PlacementSpec, rank, alpha, alpha_rule
) -> tuple[list[AdaptedModule], str]:
    """Each chosen module with its rank and alpha; returns (modules, alpha rule)."""
    base_rank = rank if rank is not None else (spec.rank or DEFAULT_RANK)
    rule = alpha_rule or spec.alpha_rule
    fixed_alpha = alpha if alpha is not None else spec.alpha
    if rule is None:
        rule = "fixed" if fixed_alpha is not None else "2r"
    out: list[AdaptedModule] = []
    for m in chosen:
        r = base_rank if rank is not None else spec.role_rank.get(m.role, base_rank)
        if rank is None and m.layer is not None:
            r = spec.layer_rank.get(m.layer, r)
        if rank is None:
            r = spec.module_rank.get(m.name, r)
        if r < 1 or r > min(m.in_features, m.out_features):
            raise UserError(
                f"rank {r} is invalid for {m.name} ({m.in_features} -> {m.out_features}): "
                f"use 1..{min(m.in_features, m.out_features)}"
            )
        a = 2.0 * r if rule == "2r" or fixed_alpha is None else float(fixed_alpha)
        out.append(
            AdaptedModule(
                m.name,
                m.role,
                m.layer,
                m.in_features,
                m.out_features,
                r,
                a,
                m.kind,
                m.tower,
                m.experts,
            )
        )
    return out, rule


def _peft_limits(family: str, chosen: list[ModuleInfo], label: str, warnings: list[str]):
    """Drop what PEFT refuses; warn about what PEFT would silently rewrite."""
    refused = [m for m in chosen if mamba_refused(family, m.name)]
    if refused:
        chosen = [m for m in chosen if not mamba_refused(family, m.name)]
        warnings.append(
            f"PEFT refuses LoRA on {_leaf_path(refused[0].name)} in {family} (Mamba kernels): "
            f"{len(refused)} module(s) left out"
        )
        if not chosen:
            raise UserError(f"placement {label!r} adapts only modules PEFT refuses in {family}")
    moved = rewritten_targets(family, [m.name for m in chosen if m.kind != "param"])
    if moved:
        warnings.append(
            f"PEFT {_peft_version()} moves {len(moved)} target(s) ending like "
            f"{_leaf_path(moved[0]).rsplit('.', 1)[-1]} (e.g. {_leaf_path(moved[0])}) of "
            f"{family} to its fused experts (its transformers v4 -> v5 MoE conversion): "
            "those modules would stay untrained and the experts be adapted instead"
        )
    return chosen


def _peft_version() -> str:
    return version("peft")


def resolve(
    spec: str | dict | PlacementSpec,
    target,
    *,
    rank: int | None = None,
    alpha: float | None = None,
    layers: str | list[int] | None = None,
    alpha_rule: str | None = None,
    experts: str | None = None,
    tower: str | None = None,
    use_dora: bool = False,
) -> ResolvedPlacement:
    """Resolve a placement against a model into an explicit module list.

    Args:
        target: an nn.Module (the meta device is fine), a transformers config, a model
            reference (built-in name, local dir, hub id) or an ArchInfo.
        rank, alpha, layers, alpha_rule, experts, tower: override the spec's own values
            (the CLI flags).
        use_dora: count DoRA's magnitude vectors too.
    """
    spec = parse_placement(spec)
    if tower is not None or experts is not None:
        over = {"tower": tower, "experts": experts}
        spec = parse_placement({**spec.model_dump(), **{k: v for k, v in over.items() if v}})
    arch = _arch_of(target)
    label = spec.label()
    warnings: list[str] = []
    if spec.roles is not None and spec.target_modules is not None:
        raise UserError(f"placement {label!r} gives both roles and target_modules: keep one")
    if spec.roles is None and spec.target_modules is None:
        raise UserError(f"placement {label!r} names no roles and no target_modules")
    if spec.roles is not None:
        chosen = _by_roles(spec, arch, label, warnings)
    else:
        chosen = _by_patterns(spec, arch, label, warnings)
    chosen = _select_experts(chosen, spec.experts, arch.family)

    sel = spec.layers if layers is None else layers
    n_layers = arch.layers_of(spec.tower)
    if str(sel).strip().lower() in ("all", "", "*"):
        warnings.extend(_coverage_warnings(arch, chosen, spec.tower))
    if n_layers:
        keep = set(select_layers(sel, n_layers))
        chosen = [m for m in chosen if m.layer is None or m.tower != spec.tower or m.layer in keep]
        if not chosen:
            raise UserError(f"placement {label!r} with layers {sel!r} selects no module")

    chosen = _peft_limits(arch.family, chosen, label, warnings)
    stray = sorted(set(spec.module_rank) - {m.name for m in chosen})
    if stray:
        warnings.append(
            f"module_rank names {len(stray)} module(s) the placement does not adapt "
            f"(e.g. {stray[0]!r}); their ranks are ignored"
        )
    out, rule = _sized(chosen, spec, rank, alpha, alpha_rule)
    return ResolvedPlacement(
        name=label,
        modules=out,
        base_params=arch.base_params,
        n_layers=arch.n_layers,
        family=arch.family,
        use_rslora=(rule == "rslora"),
        warnings=warnings,
        use_dora=use_dora,
    )


def _paths_of(ms: list[ModuleInfo], role: str) -> str:
    paths = sorted({_leaf_path(m.name) for m in ms if m.role == role})
    return "/".join(paths)


def _ranges(xs: list[int]) -> str:
    if not xs:
        return ""
    out: list[str] = []
    start = prev = xs[0]
    for x in [*xs[1:], xs[-1] + 2]:  # the sentinel is never prev + 1: it closes the last run
        if x != prev + 1:
            out.append(f"{start}-{prev}" if start != prev else f"{start}")
            start = x
        prev = x
    return ",".join(out)
