"""Resolution of a placement spec against a model into one explicit module list.

Training, parameter accounting and every export read this one list, so they cannot
disagree. Accounting needs shapes only: a LoRA adapter on a (in -> out) layer adds
``r x (in + out)`` parameters (A is r x in, B is out x r).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

from torch import nn

from loraplace.arch import ArchInfo, ModuleInfo, describe
from loraplace.errors import UserError
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
    kind: str = "linear"

    @property
    def params(self) -> int:
        return self.rank * (self.in_features + self.out_features)


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

    @property
    def trainable_params(self) -> int:
        return sum(m.params for m in self.modules)

    @property
    def trainable_pct(self) -> float:
        """PEFT's convention: trainable / (base + adapter) x 100."""
        total = self.base_params + self.trainable_params
        return 100.0 * self.trainable_params / total if total else 0.0

    def by_role(self) -> dict[str, dict]:
        """role -> {modules, params, layers, names (distinct leaf paths)}."""
        out: dict[str, dict] = {}
        for m in self.modules:
            r = out.setdefault(m.role, {"modules": 0, "params": 0, "layers": set(), "paths": set()})
            r["modules"] += 1
            r["params"] += m.params
            if m.layer is not None:
                r["layers"].add(m.layer)
            r["paths"].add(_leaf_path(m.name))
        return out

    def as_dicts(self) -> tuple[dict, ...]:
        return tuple(asdict(m) for m in self.modules)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "trainable_params": self.trainable_params,
            "base_params": self.base_params,
            "trainable_pct": self.trainable_pct,
            "use_rslora": self.use_rslora,
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


def _leaf_path(name: str) -> str:
    """'transformer.h.3.attn.c_proj' -> 'attn.c_proj' (the path inside a block)."""
    m = re.search(r"\.\d+\.(.+)$", name)
    return m.group(1) if m else name


def _arch_of(target) -> ArchInfo:
    if isinstance(target, ArchInfo):
        return target
    if isinstance(target, nn.Module):
        return describe(target)
    from loraplace.arch import meta_from_config

    if isinstance(target, str):
        from loraplace.models import load_config

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


def resolve(
    spec: str | dict | PlacementSpec,
    target,
    *,
    rank: int | None = None,
    alpha: float | None = None,
    layers: str | list[int] | None = None,
    alpha_rule: str | None = None,
) -> ResolvedPlacement:
    """Resolve a placement against a model into an explicit module list.

    Args:
        target: an nn.Module (the meta device is fine), a transformers config, a model
            reference (built-in name, local dir, hub id) or an ArchInfo.
        rank, alpha, layers, alpha_rule: override the spec's own values (the CLI flags).
    """
    spec = parse_placement(spec)
    arch = _arch_of(target)
    label = spec.label()
    warnings: list[str] = []
    candidates = [m for m in arch.modules]

    if spec.roles is not None and spec.target_modules is not None:
        raise UserError(f"placement {label!r} gives both roles and target_modules: keep one")
    if spec.roles is None and spec.target_modules is None:
        raise UserError(f"placement {label!r} names no roles and no target_modules")

    if spec.roles is not None:
        if not arch.known:
            raise UserError(
                f"cannot read module roles of architecture {arch.family!r}: name the modules "
                "with target_modules patterns instead (see `loraplace inspect`)"
            )
        wanted = set(spec.roles)
        chosen = [m for m in candidates if m.role in wanted]
        if spec.include_other:
            chosen += [m for m in candidates if m.role == "other" and m.layer is not None]
        if not chosen:
            present = ", ".join(arch.roles())
            hint = ""
            if wanted & {"attn.q", "attn.v", "attn.k"} and "attn.qkv" in arch.roles():
                hint = f" ({arch.family} fuses q, k and v into attn.qkv: use qkv or attention)"
            raise UserError(
                f"placement {label!r} matches no module of {arch.family}{hint}: "
                f"its roles are {present}"
            )
    else:
        matches = _match_targets(spec, candidates)
        empty = [t for t, ms in matches.items() if not ms]
        if empty:
            examples = sorted({_leaf_path(m.name) for m in candidates})[:8]
            raise UserError(
                f"target {empty[0]!r} of placement {label!r} matches no linear layer of "
                f"{arch.family}: module paths are e.g. {', '.join(examples)}"
            )
        for t, ms in matches.items():
            roles = Counter(m.role for m in ms)
            if len(roles) > 1:
                detail = ", ".join(
                    f"{n} {_paths_of(ms, r)} ({r})" for r, n in sorted(roles.items())
                )
                warnings.append(
                    f"{t!r} matches modules of {len(roles)} roles: {detail}; "
                    "use roles or a full path to adapt only one"
                )
        seen: set[str] = set()
        chosen = []
        for ms in matches.values():
            for m in ms:
                if m.name not in seen:
                    seen.add(m.name)
                    chosen.append(m)
        chosen.sort(key=lambda m: [m.name for m in candidates].index(m.name))

    # Partial coverage: a role or pattern present in some layers and not others.
    sel = spec.layers if layers is None else layers
    if str(sel).strip().lower() in ("all", "", "*") and arch.n_layers:
        per_role_layers: dict[str, set[int]] = defaultdict(set)
        for m in chosen:
            if m.layer is not None:
                per_role_layers[_leaf_path(m.name)].add(m.layer)
        for path, ls in per_role_layers.items():
            if len(ls) < arch.n_layers:
                warnings.append(
                    f"{path!r} is adapted in {len(ls)} of {arch.n_layers} layers only "
                    f"({_ranges(sorted(ls))})"
                )

    if arch.n_layers:
        keep = set(select_layers(sel, arch.n_layers))
        chosen = [m for m in chosen if m.layer is None or m.layer in keep]
        if not chosen:
            raise UserError(f"placement {label!r} with layers {sel!r} selects no module")

    stray = sorted(set(spec.module_rank) - {m.name for m in chosen})
    if stray:
        warnings.append(
            f"module_rank names {len(stray)} module(s) the placement does not adapt "
            f"(e.g. {stray[0]!r}); their ranks are ignored"
        )
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
        if rule == "2r":
            a = 2.0 * r
        else:
            a = float(fixed_alpha) if fixed_alpha is not None else 2.0 * r
        out.append(
            AdaptedModule(m.name, m.role, m.layer, m.in_features, m.out_features, r, a, m.kind)
        )

    return ResolvedPlacement(
        name=label,
        modules=out,
        base_params=arch.base_params,
        n_layers=arch.n_layers,
        family=arch.family,
        use_rslora=(rule == "rslora"),
        warnings=warnings,
    )


def _paths_of(ms: list[ModuleInfo], role: str) -> str:
    paths = sorted({_leaf_path(m.name) for m in ms if m.role == role})
    return "/".join(paths)


def _ranges(xs: list[int]) -> str:
    if not xs:
        return ""
    out, start, prev = [], xs[0], xs[0]
    for x in xs[1:] + [math.inf]:
        if x != prev + 1:
            out.append(f"{start}-{prev}" if start != prev else f"{start}")
            start = x
        prev = x
    return ",".join(out)
