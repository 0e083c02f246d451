"""Module roles per model family, detected from the module tree and the config.

Every adaptable linear layer (``nn.Linear`` or GPT-2's transposed ``Conv1D``) gets a role
and a layer index. Roles are decided from *shapes* (hidden size, heads, kv-heads,
intermediate size read from the config) with the module's own name only breaking ties
(q vs k vs v when their shapes agree), so new checkpoints of a known layout work without
a list of model names. A layout it cannot read keeps its linear layers with role
``other``: the user then names modules by pattern, never a silent guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

ROLES = (
    "attn.qkv",  # fused q/k/v (GPT-2 c_attn, NeoX query_key_value, Phi-3 qkv_proj)
    "attn.q",
    "attn.k",
    "attn.v",
    "attn.o",  # attention output projection
    "mlp.gate_up",  # fused gate+up (Phi-3 gate_up_proj)
    "mlp.gate",
    "mlp.up",
    "mlp.down",
    "lm_head",
    "other",  # a linear layer whose role could not be read: adapt it by pattern
)

_ATTN_HINTS = ("attn", "attention")
_MLP_HINTS = ("mlp", "ffn", "feed", "fc1", "fc2")
_Q, _K, _V = (
    ("q", "query", "q_proj", "wq"),
    ("k", "key", "k_proj", "wk"),
    ("v", "value", "v_proj", "wv"),
)


@dataclass(frozen=True)
class ModuleInfo:
    """One adaptable linear layer of a model."""

    name: str  # full dotted name, as PEFT sees it
    role: str
    layer: int | None  # block index; None outside the blocks (lm_head)
    in_features: int
    out_features: int
    kind: str  # "linear" | "conv1d" (GPT-2 stores the weight transposed)

    @property
    def params(self) -> int:
        return self.in_features * self.out_features


@dataclass
class ArchInfo:
    """What loraplace knows of a model's layout."""

    family: str  # config.model_type, for display
    n_layers: int
    hidden_size: int
    base_params: int  # unique parameters of the base model (tied weights once)
    modules: list[ModuleInfo] = field(default_factory=list)
    known: bool = True  # False: roles could not be read, only patterns can place adapters
    blocks_prefix: str = ""  # e.g. "transformer.h"

    def roles(self) -> list[str]:
        present = {m.role for m in self.modules}
        return [r for r in ROLES if r in present]

    def by_role(self, role: str) -> list[ModuleInfo]:
        return [m for m in self.modules if m.role == role]


def _features(module: nn.Module) -> tuple[int, int, str] | None:
    """(in, out, kind) for an adaptable linear layer, else None."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, "linear"
    # transformers' Conv1D (GPT-2 family): weight is [in, out]; matched by name to avoid
    # importing transformers here.
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "nx"):
        return int(module.nx), int(module.nf), "conv1d"
    return None


def _cfg(config, *names, default=None):
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


def _find_blocks(model: nn.Module, n_layers: int) -> tuple[str, nn.ModuleList] | None:
    """The ModuleList of transformer blocks: the largest list of n_layers modules."""
    best = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n_layers and n_layers > 0:
            size = sum(1 for _ in mod.modules())
            if best is None or size > best[2]:
                best = (name, mod, size)
    return (best[0], best[1]) if best else None


def _tokens(rel: str) -> list[str]:
    return [t for t in re.split(r"[._]", rel.lower()) if t]


def _name_says(rel: str, hints: tuple[str, ...]) -> bool:
    leaf = rel.rsplit(".", 1)[-1].lower()
    return leaf in hints or any(leaf.startswith(h + "_") for h in hints if len(h) == 1)


def _block_role(rel: str, fin: int, fout: int, dims: dict[str, int]) -> str:
    """Role of a linear layer at relative name ``rel`` inside one transformer block."""
    d, q_dim, kv_dim, ffn = dims["d"], dims["q"], dims["kv"], dims["ffn"]
    toks = _tokens(rel)
    in_attn = any(h in t for t in toks[:-1] for h in _ATTN_HINTS) or "attn" in toks[-1]
    leaf = rel.rsplit(".", 1)[-1].lower()
    in_mlp = any(h in t for t in toks for h in _MLP_HINTS)
    if in_attn and fin == d and fout == q_dim + 2 * kv_dim:
        return "attn.qkv"
    if in_attn or (not in_mlp and _name_says(rel, _Q + _K + _V)):
        if fin == d and fout in (q_dim, kv_dim):
            if _name_says(rel, _Q):
                return "attn.q"
            if _name_says(rel, _K):
                return "attn.k"
            if _name_says(rel, _V):
                return "attn.v"
        if fin == q_dim and fout == d:
            return "attn.o"
        return "other"
    # MLP (any linear in the block outside attention)
    if fin == d and ffn and fout == 2 * ffn:
        return "mlp.gate_up"
    if fin == d and (fout == ffn or not ffn):
        return "mlp.gate" if "gate" in leaf or leaf == "w1" else "mlp.up"
    if fout == d and (fin == ffn or not ffn):
        return "mlp.down"
    return "other"


def describe(model: nn.Module, config=None) -> ArchInfo:
    """Read a model's layout: every adaptable linear layer with its role and layer index.

    Works on the meta device (shapes only).
    """
    config = config if config is not None else getattr(model, "config", None)
    n_layers = int(_cfg(config, "num_hidden_layers", "n_layer", "num_layers", default=0) or 0)
    d = int(_cfg(config, "hidden_size", "n_embd", "d_model", default=0) or 0)
    n_heads = int(_cfg(config, "num_attention_heads", "n_head", default=0) or 0)
    kv_heads = int(_cfg(config, "num_key_value_heads", default=n_heads) or n_heads)
    head_dim = _cfg(config, "head_dim", default=None)
    head_dim = int(head_dim) if head_dim else (d // n_heads if n_heads else 0)
    ffn = _cfg(config, "intermediate_size", "n_inner", "ffn_dim", default=None)
    if ffn is None and (getattr(config, "model_type", "") or "").startswith("gpt2"):
        ffn = 4 * d  # GPT-2's n_inner=None means 4 x n_embd
    dims = {"d": d, "q": n_heads * head_dim, "kv": kv_heads * head_dim, "ffn": int(ffn or 0)}
    vocab = int(_cfg(config, "vocab_size", default=0) or 0)

    seen: set[int] = set()
    base_params = 0
    for p in model.parameters():  # parameters() yields tied weights once
        if id(p) not in seen:
            seen.add(id(p))
            base_params += p.numel()

    found = _find_blocks(model, n_layers)
    prefix = found[0] if found else ""
    block_re = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.+)$") if found else None
    modules: list[ModuleInfo] = []
    for name, mod in model.named_modules():
        feats = _features(mod)
        if feats is None:
            continue
        fin, fout, kind = feats
        m = block_re.match(name) if block_re else None
        if m:
            layer, rel = int(m.group(1)), m.group(2)
            role = _block_role(rel, fin, fout, dims) if d else "other"
        else:
            layer = None
            is_head = (
                vocab
                and fout == vocab
                and fin == d
                and name.split(".")[-1] in ("lm_head", "embed_out", "output")
            )
            role = "lm_head" if is_head else "other"
        modules.append(ModuleInfo(name, role, layer, fin, fout, kind))

    in_blocks = [m for m in modules if m.layer is not None]
    known = bool(found) and bool(in_blocks) and all(m.role != "other" for m in in_blocks)
    return ArchInfo(
        family=str(getattr(config, "model_type", type(model).__name__)),
        n_layers=n_layers,
        hidden_size=d,
        base_params=base_params,
        modules=modules,
        known=known,
        blocks_prefix=prefix,
    )


def meta_from_config(config) -> nn.Module:
    """Instantiate a causal LM from a config on the meta device: shapes, no memory."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def summarize(arch: ArchInfo) -> dict:
    """A JSON-able view for `loraplace inspect`: one row per (role, path), and a grid."""
    import re as _re

    rows: dict[tuple[str, str, int, int], list[int | None]] = {}
    for m in arch.modules:
        path = _re.sub(r"^.*?\.\d+\.", "", m.name) if m.layer is not None else m.name
        rows.setdefault((m.role, path, m.in_features, m.out_features), []).append(m.layer)
    role_rows = []
    for (role, path, fin, fout), layers in rows.items():
        idx = sorted(x for x in layers if x is not None)
        role_rows.append(
            {
                "role": role,
                "path": path,
                "in_features": fin,
                "out_features": fout,
                "layers": _span(idx) if idx else "-",
                "n_modules": len(layers),
                "weight_params": fin * fout,
                "lora_params_per_rank": fin + fout,
            }
        )
    order = [r for r in ROLES if any(x["role"] == r for x in role_rows)]
    role_rows.sort(key=lambda x: (order.index(x["role"]), x["path"]))
    grid: dict[int, dict[str, str]] = {}
    shapes_per_role: dict[str, set] = {}
    for m in arch.modules:
        if m.layer is None:
            continue
        cell = f"{m.in_features} -> {m.out_features}"
        grid.setdefault(m.layer, {})
        prev = grid[m.layer].get(m.role)
        grid[m.layer][m.role] = f"{prev}; {cell}" if prev else cell
        shapes_per_role.setdefault(m.role, set()).add(grid[m.layer][m.role])
    return {
        "family": arch.family,
        "n_layers": arch.n_layers,
        "hidden_size": arch.hidden_size,
        "base_params": arch.base_params,
        "known": arch.known,
        "roles": role_rows,
        "role_order": [r for r in order if r != "lm_head"],
        "per_layer": {str(k): v for k, v in sorted(grid.items())},
        "modules": [
            {
                "name": m.name,
                "role": m.role,
                "layer": m.layer,
                "in_features": m.in_features,
                "out_features": m.out_features,
                "kind": m.kind,
            }
            for m in arch.modules
        ],
    }


def _span(xs: list[int]) -> str:
    if xs == list(range(xs[0], xs[-1] + 1)):
        return f"{xs[0]}-{xs[-1]}" if len(xs) > 1 else str(xs[0])
    return ",".join(str(x) for x in xs)
