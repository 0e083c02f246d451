"""The placement spec: roles x layers x rank x alpha, or raw PEFT ``target_modules``.

A spec is data (pydantic, so it validates the same from YAML, JSON or the CLI). Named
presets cover the seed study's three placements under its own names, with PEFT's suffix
semantics (so ``seed-attention`` really does match ``mlp.c_proj`` too), and role presets
that mean what they say.
"""

from __future__ import annotations

import difflib
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from loraplace.arch import EXPERT_ROLES, ROLES
from loraplace.errors import UserError, closest

AlphaRule = Literal["fixed", "2r", "rslora"]
Tower = Literal["language", "vision", "projector"]

_SHARED = ("moe.shared.gate", "moe.shared.up", "moe.shared.down")
# Role groups usable wherever a role is expected. The router (moe.router) is in none: a
# preset never adapts it; name the role to adapt it on purpose.
ROLE_GROUPS: dict[str, tuple[str, ...]] = {
    "attn": tuple(r for r in ROLES if r.startswith("attn.")),
    # the MLP of a mixture-of-experts block is its experts, routed and shared
    "mlp": ("mlp.gate_up", "mlp.gate", "mlp.up", "mlp.down", *EXPERT_ROLES, *_SHARED),
    "moe": EXPERT_ROLES,
    "moe.shared": _SHARED,
    "ssm": tuple(r for r in ROLES if r.startswith("ssm.")),
}


class PlacementSpec(BaseModel):
    """Where adapters go and how large they are."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    # Either roles (see loraplace.arch.ROLES; "attn"/"mlp" expand to their roles) ...
    roles: list[str] | None = None
    # ... or PEFT-style target_modules: a list with PEFT's suffix semantics, or a regex.
    target_modules: list[str] | str | None = None
    include_other: bool = False  # all-linear: also linear layers whose role is "other"
    # PEFT's all-linear reaches nn.Linear modules only: fused 3-D experts are skipped (with
    # a warning that says how many parameters that leaves untrained).
    linear_only: bool = False
    # Routed experts: "all", indices "0-7" / "0,3,5", or "top:k" (needs routing counts).
    experts: str = "all"
    tower: Tower = "language"  # which tower of a multimodal model roles refer to
    # Layer selector: "all", "3", "0-5", "0-3,8,10-11", "first:k", "last:k",
    # "every:n" or "every:n:offset", or a list of indices.
    layers: str | list[int] = "all"
    rank: int | None = None  # None: the study's or CLI's rank (default 8)
    role_rank: dict[str, int] = Field(default_factory=dict)  # per-role rank overrides
    layer_rank: dict[int, int] = Field(default_factory=dict)  # per-layer rank overrides
    # Per-module rank overrides by full module name (budgeted allocation writes these);
    # they win over role_rank and layer_rank.
    module_rank: dict[str, int] = Field(default_factory=dict)
    alpha: float | None = None  # used with alpha_rule "fixed" (and rslora); default 2r
    alpha_rule: AlphaRule | None = None  # None: "fixed" if alpha is given, else "2r"

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, roles):
        if roles is None:
            return roles
        out = []
        for r in roles:
            if r in ROLE_GROUPS:
                out.extend(ROLE_GROUPS[r])
            elif r in ROLES:
                out.append(r)
            else:
                valid = list(ROLES) + list(ROLE_GROUPS)
                raise UserError(
                    f"unknown role {r!r}{closest(r, valid)}: valid roles are {', '.join(valid)}"
                )
        return list(dict.fromkeys(out))

    @field_validator("rank", "alpha")
    @classmethod
    def _positive(cls, v, info):
        # rank 0 read as "unset" would train the default rank 8 without a word
        if v is not None and v <= 0:
            raise ValueError(f"{info.field_name} must be above 0 (got {v})")
        return v

    @field_validator("role_rank", "layer_rank", "module_rank")
    @classmethod
    def _positive_ranks(cls, v, info):
        bad = {k: r for k, r in v.items() if r < 1}
        if bad:
            key, r = next(iter(bad.items()))
            raise ValueError(f"{info.field_name} {key}: a rank must be at least 1 (got {r})")
        return v

    def label(self) -> str:
        if self.name:
            return self.name
        if self.roles:
            return "+".join(self.roles)
        if isinstance(self.target_modules, list):
            return "+".join(self.target_modules)
        return str(self.target_modules)


PRESETS: dict[str, dict] = {
    # The seed study's placements, as it wrote them: PEFT suffix semantics.
    "seed-full": {"target_modules": ["c_attn", "c_proj", "c_fc"]},
    "seed-attention": {"target_modules": ["c_attn", "c_proj"]},
    "seed-ffn": {"target_modules": ["c_fc"]},
    # Role presets: they mean what they say on every architecture loraplace knows.
    "attention": {"roles": ["attn"]},
    "mlp": {"roles": ["mlp"]},
    "mlp-up": {"roles": ["mlp.up", "mlp.gate_up"]},
    "mlp-gate": {"roles": ["mlp.gate"]},
    "mlp-down": {"roles": ["mlp.down"]},
    "all-linear": {"roles": ["attn", "mlp", "ssm"], "include_other": True, "linear_only": True},
    "all": {"roles": ["attn", "mlp", "ssm"], "include_other": True},
    "experts": {"roles": ["moe"]},
    "shared-experts": {"roles": ["moe.shared"]},
    "ssm": {"roles": ["ssm"]},
    "projector": {"roles": ["projector"], "tower": "projector"},
    "qv": {"roles": ["attn.q", "attn.v"]},
    "qkv": {"roles": ["attn.qkv", "attn.q", "attn.k", "attn.v"]},
    "attn-o": {"roles": ["attn.o"]},
}

PRESET_HELP: dict[str, str] = {
    "seed-full": "target_modules [c_attn, c_proj, c_fc] (the seed study's full placement)",
    "seed-attention": "target_modules [c_attn, c_proj] (also matches mlp.c_proj in GPT-2!)",
    "seed-ffn": "target_modules [c_fc]",
    "attention": "every attention projection (q, k, v or fused qkv, and output)",
    "mlp": "every MLP projection (up, gate, down; the routed and shared experts of MoE)",
    "mlp-up": "MLP up projection (fused gate_up where that is how the model stores it)",
    "mlp-gate": "MLP gate projection",
    "mlp-down": "MLP down projection",
    "all-linear": "every linear layer in the blocks (PEFT's all-linear: no lm_head, no "
    "fused 3-D experts, and never the router)",
    "all": "all-linear plus fused 3-D experts (through PEFT's target_parameters)",
    "experts": "routed experts (moe.gate_up / gate / up / down)",
    "shared-experts": "shared experts (moe.shared.*)",
    "ssm": "Mamba mixer projections (in_proj, x_proj, dt_proj, out_proj)",
    "projector": "the multimodal projector between vision tower and language model",
    "qv": "query and value projections (needs separate q and v)",
    "qkv": "query, key and value projections (fused or separate)",
    "attn-o": "attention output projection",
}


def parse_placement(obj: str | dict | PlacementSpec) -> PlacementSpec:
    """A spec from a preset name, ``a+b`` shorthand, a dict or a PlacementSpec.

    ``a+b`` joins roles/role groups when every part is one (``attn.qkv+mlp.up``), and is
    otherwise a PEFT target_modules list (``c_attn+c_proj``).
    """
    if isinstance(obj, PlacementSpec):
        return obj
    if isinstance(obj, dict):
        data = dict(obj)
        preset = data.pop("preset", None)
        if preset is not None:
            base = parse_placement(preset).model_dump(exclude_unset=True)
            base.update(data)
            data = base
        try:
            return PlacementSpec(**data)
        except UserError:
            raise
        except Exception as exc:  # pydantic ValidationError: make it one line
            raise UserError(f"invalid placement {obj!r}: {_one_line(exc)}") from None
    if not isinstance(obj, str) or not obj.strip():
        raise UserError(f"invalid placement {obj!r}: give a preset name, roles or a spec")
    text = obj.strip()
    if text in PRESETS:
        return PlacementSpec(name=text, **PRESETS[text])
    parts = [p.strip() for p in text.split("+") if p.strip()]
    roleish = set(ROLES) | set(ROLE_GROUPS)
    if all(p in roleish for p in parts):
        return PlacementSpec(name=text, roles=parts)
    _check_role_typo(text, parts, roleish)
    if len(parts) == 1 and not re.fullmatch(r"[\w.]+", text):
        raise UserError(
            f"unknown placement {text!r}: use a preset ({', '.join(PRESETS)}), roles "
            "joined by '+', or module names"
        )
    if len(parts) == 1 and text not in roleish:
        hint = closest(text, list(PRESETS) + list(roleish))
        if hint and "." not in text and "_" not in text:
            # a word that is neither a preset nor a role: most likely a typo
            raise UserError(
                f"unknown preset or role {text!r}{hint}: presets are {', '.join(PRESETS)}"
            )
    return PlacementSpec(name=text, target_modules=parts)


def _check_role_typo(text: str, parts: list[str], roleish: set[str]) -> None:
    """Roles joined by '+' with one misspelt would be read as module names, and the error
    would then blame a valid role: blame the part that is nearly a role instead."""
    if not any(p in roleish for p in parts):
        return
    dotted = sorted(r for r in roleish if "." in r)
    for p in parts:
        # A dotted part one letter off a dotted role ("mlp.upp"); a module name such as
        # c_attn or a full path (h.0.attn.c_attn) is never that close.
        near = difflib.get_close_matches(p, dotted, n=1, cutoff=0.8) if "." in p else []
        if p not in roleish and near:
            raise UserError(
                f"unknown role {p!r} in placement {text!r} (did you mean {near[0]!r}?): "
                "`loraplace inspect MODEL` lists the model's roles"
            )


def _one_line(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = []
        for e in errors():
            loc = ".".join(str(x) for x in e.get("loc", ()))
            parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        return "; ".join(parts)
    return str(exc).splitlines()[0]


def select_layers(selector: str | list[int], n_layers: int) -> list[int]:
    """Layer indices a selector picks, in order; raises UserError when out of range."""
    if isinstance(selector, list):
        idx = [int(i) for i in selector]
    else:
        s = str(selector).strip().lower()
        if s in ("all", "", "*"):
            return list(range(n_layers))
        m = re.fullmatch(r"(first|last):(\d+)", s)
        m2 = re.fullmatch(r"every:(\d+)(?::(\d+))?", s)
        if m:
            k = int(m.group(2))
            if k < 1 or k > n_layers:
                raise UserError(
                    f"layer selector {selector!r} asks for {k} layers: the model has "
                    f"{n_layers} (use 1..{n_layers})"
                )
            idx = list(range(k)) if m.group(1) == "first" else list(range(n_layers - k, n_layers))
        elif m2:
            n, off = int(m2.group(1)), int(m2.group(2) or 0)
            if n < 1:
                raise UserError(f"layer selector {selector!r}: the step must be >= 1")
            idx = list(range(off, n_layers, n))
        elif re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", s.replace(" ", "")):
            idx = []
            for part in s.replace(" ", "").split(","):
                a, _, b = part.partition("-")
                lo, hi = int(a), int(b) if b else int(a)
                if hi < lo:
                    raise UserError(f"layer range {part!r} runs backwards: write {hi}-{lo}")
                idx.extend(range(lo, hi + 1))
        else:
            raise UserError(
                f"bad layer selector {selector!r}: use all, 3, 0-5, 0-3,8, first:k, last:k "
                "or every:n[:offset]"
            )
    bad = [i for i in idx if i < 0 or i >= n_layers]
    if bad:
        raise UserError(
            f"layer {bad[0]} is out of range: the model has {n_layers} layers (0-{n_layers - 1})"
        )
    if not idx:
        raise UserError(f"layer selector {selector!r} selects no layer")
    return sorted(set(idx))
