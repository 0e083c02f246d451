"""Audit of a PEFT LoRA adapter from the wild: what it adapts, at which ranks, and what
its config says that its weights do not.

Reads ``adapter_config.json`` and the safetensors weights only (no training, no base
weights). With the base model's config (``--model``, or the adapter's own
``base_model_name_or_path`` when that resolves locally) every adapted module gets its role,
layer and tower; fused expert adapters (PEFT's ``target_parameters``) are told apart by
their shapes.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from loraplace.arch import ArchInfo, ModuleInfo, describe, meta_from_config
from loraplace.arch.describe import tower_of
from loraplace.errors import UserError
from loraplace.models import load_config

_KEY = re.compile(
    r"^(?:base_model\.model\.)?(.+?)((?:\.base_layer)*)\.lora_(A|B)(?:\.\w+)?\.weight$"
)


@dataclass(frozen=True)
class AdaptedUnit:
    """One adapter found in the weights."""

    name: str  # module name, or the parameter's name for a fused expert adapter
    role: str  # "?" when the base model's layout is not known
    layer: int | None
    tower: str
    rank: int  # from the tensors (per expert for fused experts)
    config_rank: int  # what adapter_config.json says (r, or its rank_pattern)
    alpha: float
    experts: int
    params: int  # numel of lora_A + lora_B


@dataclass
class Audit:
    adapter_dir: str
    base_model: str | None
    family: str | None
    units: list[AdaptedUnit]
    trainable_params: int  # every tensor in the adapter file
    warnings: list[str] = field(default_factory=list)

    def table(self) -> dict[str, dict[int | None, set[int]]]:
        """role -> layer -> ranks in the weights."""
        out: dict[str, dict[int | None, set[int]]] = {}
        for u in self.units:
            key = u.role if u.tower == "language" else f"{u.tower}:{u.role}"
            out.setdefault(key, {}).setdefault(u.layer, set()).add(u.rank)
        return out

    def to_json(self) -> dict:
        return {
            "adapter_dir": self.adapter_dir,
            "base_model": self.base_model,
            "family": self.family,
            "trainable_params": self.trainable_params,
            "modules": [u.__dict__ for u in self.units],
            "warnings": self.warnings,
        }


def read_adapter(adapter_dir: Path) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """adapter_config.json and {tensor name: shape} of the adapter's safetensors."""
    cfg_path = adapter_dir / "adapter_config.json"
    weights = adapter_dir / "adapter_model.safetensors"
    if not cfg_path.is_file():
        raise UserError(f"{adapter_dir} has no adapter_config.json: give a PEFT adapter directory")
    if not weights.is_file():
        raise UserError(
            f"{adapter_dir} has no adapter_model.safetensors: save the adapter with "
            "safe_serialization (pickled .bin weights are not read)"
        )
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{cfg_path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise UserError(
            f"{cfg_path} cannot be read as text ({exc}): is it a PEFT config?"
        ) from None
    _check_config(cfg_path, config)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as exc:  # truncated, empty, not safetensors at all
        raise UserError(
            f"{weights} is damaged or not a safetensors file ({' '.join(str(exc).split())}): "
            "copy or save the adapter again"
        ) from None
    return config, shapes


# adapter_config.json keys audit reads: (JSON types each may hold, in words, null allowed)
_CONFIG_TYPES: dict[str, tuple[tuple[type, ...], str, bool]] = {
    "r": ((int,), "an integer", False),
    "lora_alpha": ((int, float), "a number", False),
    "rank_pattern": ((dict,), "an object", True),
    "alpha_pattern": ((dict,), "an object", True),
    "peft_type": ((str,), "a string", True),
    "base_model_name_or_path": ((str,), "a string", True),
}


def _check_config(path: Path, config) -> None:
    """The config is a JSON object whose keys audit reads hold what PEFT writes there."""
    if not isinstance(config, dict):
        raise UserError(f"{path} holds a JSON {type(config).__name__}, not a PEFT adapter config")
    for key, (types, want, nullable) in _CONFIG_TYPES.items():
        if key not in config or (config[key] is None and nullable):
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise UserError(f"{path}: {key} is {json.dumps(value)}, not {want}: a damaged config?")
    for key in ("rank_pattern", "alpha_pattern"):
        for name, value in (config.get(key) or {}).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"{path}: {key} {name!r} is {json.dumps(value)}, not a number")


def _pattern_key(keys, name: str) -> str | None:
    """PEFT's rank_pattern / alpha_pattern matching (peft.utils.other.get_pattern_key)."""
    for key in keys:
        if re.match(rf"(.*\.)?({key})$", name):
            return key
    return None


def _pairs(shapes: dict[str, tuple[int, ...]]) -> dict[tuple[str, int], dict[str, tuple]]:
    """(module, wrapper depth) -> {"A": shape, "B": shape}; depth counts nested base_layer."""
    out: dict[tuple[str, int], dict[str, tuple]] = {}
    for key, shape in shapes.items():
        m = _KEY.match(key)
        if m:
            depth = m.group(2).count(".base_layer")
            out.setdefault((m.group(1), depth), {})[m.group(3)] = shape
    return out


def _identify(module: str, depth: int, a: tuple, b: tuple, arch: ArchInfo | None):
    """The layout entry an adapter belongs to: a linear module, or a fused parameter."""
    if arch is None:
        return None
    for m in arch.modules:
        if m.name == module and m.kind != "param" and depth == 0:
            return m
    # ParamWrapper: A is (r x E, in), B is (out, r x E); nested wrappers follow the
    # module's parameter order, the innermost (deepest) being the first.
    cands = [
        m
        for m in arch.modules
        if m.kind == "param"
        and m.name.rsplit(".", 1)[0] == module
        and (m.in_features, m.out_features) == (a[1], b[0])
        and a[0] % m.experts == 0
    ]
    if len(cands) > 1 and depth < len(cands):
        return cands[len(cands) - 1 - depth]
    return cands[0] if cands else None


def _units(config: dict, shapes: dict, arch: ArchInfo | None) -> list[AdaptedUnit]:
    r0, a0 = int(config.get("r", 8)), float(config.get("lora_alpha", 8))
    ranks, alphas = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    units = []
    for (module, depth), pair in sorted(_pairs(shapes).items()):
        a, b = pair.get("A"), pair.get("B")
        if a is None or b is None:
            continue
        if len(a) != 2 or len(b) != 2:
            raise UserError(
                f"the adapter's weights for {module} are not matrices (lora_A {list(a)}, "
                f"lora_B {list(b)}): a damaged or non-LoRA adapter"
            )
        info: ModuleInfo | None = _identify(module, depth, a, b, arch)
        name = info.name if info else module + ".base_layer" * depth
        experts = info.experts if info else 1
        rk, ak = _pattern_key(ranks, name), _pattern_key(alphas, name)
        layer = re.search(r"\.(\d+)\.", f".{name}.")
        units.append(
            AdaptedUnit(
                name=name,
                role=info.role if info else "?",
                layer=info.layer if info else (int(layer.group(1)) if layer else None),
                tower=info.tower if info else tower_of(name),
                rank=a[0] // experts,
                config_rank=int(ranks[rk]) if rk else r0,
                alpha=float(alphas[ak]) if ak else a0,
                experts=experts,
                params=a[0] * a[1] + b[0] * b[1],
            )
        )
    return units


def _unmatched_targets(config: dict, units: list[AdaptedUnit], arch: ArchInfo | None):
    """target_modules / target_parameters entries that match nothing (PEFT's rules)."""
    modules = [m.name for m in arch.modules if m.kind != "param"] if arch else []
    params = [m.name for m in arch.modules if m.kind == "param"] if arch else []
    pool_m = modules or [u.name for u in units]
    pool_p = params or [u.name for u in units]
    out = []
    tm = config.get("target_modules")
    if isinstance(tm, str) and tm != "all-linear":
        if not any(re.fullmatch(tm, n) for n in pool_m):
            out.append(f"target_modules regex {tm!r} matches no module")
    for key, pool in (("target_modules", pool_m), ("target_parameters", pool_p)):
        entries = config.get(key)
        for t in entries if isinstance(entries, list) else []:
            if not any(n == t or n.endswith("." + t) for n in pool):
                out.append(
                    f"{key} entry {t!r} matches no {'parameter' if 'param' in key else 'module'}"
                )
    return out


def _warnings(config: dict, units: list[AdaptedUnit], arch: ArchInfo | None) -> list[str]:
    out = _unmatched_targets(config, units, arch)
    names = [u.name for u in units]
    for key in ("rank_pattern", "alpha_pattern"):
        for k, v in (config.get(key) or {}).items():
            if not any(_pattern_key([k], n) for n in names):
                out.append(
                    f"{key} key {k!r} matches no adapted module: its value {v} was never "
                    "applied (PEFT ignores such keys silently)"
                )
    towers = Counter(u.tower for u in units if u.tower != "language")
    if towers:
        where = ", ".join(f"{n} {t}" for t, n in sorted(towers.items()))
        first = next(u.name for u in units if u.tower != "language")
        out.append(
            f"{sum(towers.values())} adapted module(s) outside the language tower "
            f"({where}), e.g. {first}"
        )
    routers = [u.name for u in units if u.role == "moe.router"]
    if routers:
        out.append(
            f"the expert router is adapted ({len(routers)} module(s), e.g. {routers[0]}): "
            "it changes which experts see which tokens"
        )
    bad = [u for u in units if u.rank != u.config_rank]
    if bad:
        out.append(
            f"{len(bad)} module(s) have a rank in the weights that differs from the config "
            f"(e.g. {bad[0].name}: config {bad[0].config_rank}, weights {bad[0].rank})"
        )
    return out


def _base_arch(base: str | None, explicit: bool) -> tuple[ArchInfo | None, list[str]]:
    if not base:
        return None, ["the adapter names no base model: pass --model to read roles"]

    try:
        config = load_config(base)
        return describe(meta_from_config(config), config), []
    except UserError as exc:
        if explicit:
            raise
        return None, [f"base model {base!r} could not be read ({exc}): pass --model"]


def audit(adapter_dir: str | Path, model: str | None = None) -> Audit:
    """Read an adapter's config and weights and report what it really adapts."""
    path = Path(adapter_dir)
    config, shapes = read_adapter(path)
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise UserError(f"{path} is a {config.get('peft_type')} adapter: audit reads LoRA only")
    base = model or config.get("base_model_name_or_path")
    arch, warnings = _base_arch(base, model is not None)
    units = _units(config, shapes, arch)
    if arch is None and config.get("target_parameters"):
        warnings.append(
            "the adapter targets parameters (fused experts) and the base model is unknown: "
            "their ranks are shown as rank x experts; pass --model"
        )
    if not units:
        raise UserError(f"{path}/adapter_model.safetensors holds no lora_A/lora_B weights")
    trainable = 0
    for shape in shapes.values():
        n = 1
        for s in shape:
            n *= s
        trainable += n
    return Audit(
        adapter_dir=str(path),
        base_model=base,
        family=arch.family if arch else None,
        units=units,
        trainable_params=trainable,
        warnings=warnings + _warnings(config, units, arch),
    )
