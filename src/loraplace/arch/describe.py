"""Reading a model's layout: every adaptable unit with its role, layer index and tower.

Works on the meta device (shapes only). Multimodal models are read tower by tower: the
language model's blocks give the layer index and the roles presets use; a vision tower
keeps its own block index, and a projector has none. A layout it cannot read keeps its
linear layers with role ``other``: the user then names modules by pattern, never a
silent guess.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from loraplace.arch.layout import ArchInfo, ModuleInfo
from loraplace.arch.roles import block_role, expert_role

if TYPE_CHECKING:  # torch loads where a model is read, never when arch is imported
    from torch import nn

# Module-name parts that put a module in a tower other than the language model. The
# projector is tested first: Qwen2-VL keeps its merger inside ``visual``.
_PROJECTOR_PARTS = ("multi_modal_projector", "mm_projector", "visual.merger", "connector")
_VISION_PARTS = ("vision_tower", "vision_model", "visual", "image_encoder", "vision_encoder")


def _cfg(config, *names, default=None):
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


def tower_of(name: str) -> str:
    """ "language", "vision" or "projector" for a full module name."""
    dotted = f".{name}."
    if any(f".{p}." in dotted for p in _PROJECTOR_PARTS):
        return "projector"
    if any(f".{p}." in dotted for p in _VISION_PARTS):
        return "vision"
    return "language"


def _dims(config, vision: bool = False) -> dict[str, int]:
    """The shapes roles are read from: hidden, q, kv, ffn, experts (and MLA's kv rank)."""
    # Qwen2-VL's vision config: embed_dim is the blocks' width, hidden_size the merger's output
    names = ("embed_dim", "hidden_size") if vision else ("hidden_size", "n_embd", "d_model")
    d = int(_cfg(config, *names, default=0) or 0)
    n_heads = int(_cfg(config, "num_attention_heads", "n_head", "num_heads", default=0) or 0)
    kv_heads = int(_cfg(config, "num_key_value_heads", default=n_heads) or n_heads)
    head_dim = _cfg(config, "head_dim", default=None)
    head_dim = int(head_dim) if head_dim else (d // n_heads if n_heads else 0)
    ffn = _cfg(config, "intermediate_size", "n_inner", "ffn_dim", default=None)
    if ffn is None and (getattr(config, "model_type", "") or "").startswith("gpt2"):
        ffn = 4 * d  # GPT-2's n_inner=None means 4 x n_embd
    if ffn is None and getattr(config, "mlp_ratio", None):
        ffn = int(d * config.mlp_ratio)  # Qwen2-VL's vision blocks
    experts = _cfg(config, "num_local_experts", "num_experts", "n_routed_experts", default=0)
    mla = int(_cfg(config, "kv_lora_rank", default=0) or 0)
    return {
        "d": d,
        "q": n_heads * head_dim,
        "kv": kv_heads * head_dim,
        "ffn": int(ffn or 0),
        "experts": int(experts or 0),
        "mla": mla,
    }


def _find_blocks(model: nn.Module, n_layers: int, tower: str) -> str | None:
    """Name of the ModuleList of one tower's blocks: its largest list of n_layers modules."""
    from torch import nn

    best = None
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) != n_layers or n_layers <= 0:
            continue
        if tower_of(name + ".x") != tower:
            continue
        size = sum(1 for _ in mod.modules())
        if best is None or size > best[1]:
            best = (name, size)
    return best[0] if best else None


def _features(module: nn.Module) -> tuple[int, int, str] | None:
    """(in, out, kind) for an adaptable linear layer, else None."""
    from torch import nn

    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, "linear"
    # transformers' Conv1D (GPT-2 family): weight is [in, out]; matched by name to avoid
    # importing transformers here.
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "nx"):
        return int(module.nx), int(module.nf), "conv1d"
    return None


def _param_units(name: str, mod: nn.Module) -> list[tuple[str, str, int, int, int]]:
    """(name, role, in, out, experts) for the parameters PEFT reaches by target_parameters.

    Fused expert banks are 3-D (E, a, b); PEFT reads a as in and b as out, then swaps them
    unless the experts module says ``is_transposed`` (so gate_up (E, 2I, H) is H -> 2I).
    A top-k router keeps a 2-D (E, H) weight: H -> E, one "expert".
    """
    out = []
    transposed = bool(getattr(mod, "is_transposed", False))
    cls = type(mod).__name__.lower()
    for pname, p in mod.named_parameters(recurse=False):
        if p.ndim == 3 and "expert" in cls:
            e, a, b = p.shape
            fin, fout = (a, b) if transposed else (b, a)
            out.append((f"{name}.{pname}", expert_role(pname, False), fin, fout, e))
        elif p.ndim == 2 and pname == "weight" and "router" in cls:
            out.append((f"{name}.{pname}", "moe.router", p.shape[1], p.shape[0], 1))
    return out


def _count_params(model: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # parameters() yields tied weights once
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _outside_blocks_role(name: str, fin: int, fout: int, tower: str, d: int, vocab: int) -> str:
    if tower == "projector":
        return "projector"
    leaf = name.split(".")[-1]
    is_head = vocab and fout == vocab and fin == d and leaf in ("lm_head", "embed_out", "output")
    return "lm_head" if is_head and tower == "language" else "other"


def describe(model: nn.Module, config=None) -> ArchInfo:
    """Read a model's layout: every adaptable unit with its role, layer index and tower."""
    from torch import nn

    config = config if config is not None else getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vision = getattr(config, "vision_config", None)
    n_layers = int(_cfg(text, "num_hidden_layers", "n_layer", "num_layers", default=0) or 0)
    v_layers = int(_cfg(vision, "num_hidden_layers", "depth", default=0) or 0) if vision else 0
    dims = {"language": _dims(text), "vision": _dims(vision, True) if vision else {}}
    prefixes = {"language": _find_blocks(model, n_layers, "language")}
    if v_layers:
        prefixes["vision"] = _find_blocks(model, v_layers, "vision")
    block_res = {t: re.compile(rf"^{re.escape(p)}\.(\d+)\.(.+)$") for t, p in prefixes.items() if p}
    vocab = int(_cfg(text, "vocab_size", default=0) or 0)
    modules: list[ModuleInfo] = []
    for name, mod in model.named_modules():
        tower = tower_of(name)
        m = block_res[tower].match(name) if tower in block_res else None
        layer, rel = (int(m.group(1)), m.group(2)) if m else (None, name)
        tdims = dims.get(tower) or {}
        feats = _features(mod)
        if feats is not None:
            fin, fout, kind = feats
            if m:
                role = block_role(rel, fin, fout, tdims) if tdims.get("d") else "other"
            else:
                role = _outside_blocks_role(name, fin, fout, tower, dims["language"]["d"], vocab)
            idx = re.search(r"(?:^|\.)experts\.(\d+)\.", rel)
            expert = int(idx.group(1)) if idx and role.startswith("moe.") else None
            modules.append(ModuleInfo(name, role, layer, fin, fout, kind, tower, 1, expert))
        elif m:
            for pname, role, fin, fout, e in _param_units(name, mod):
                modules.append(ModuleInfo(pname, role, layer, fin, fout, "param", tower, e))
        elif tower == "projector":
            # Gemma 3 projects with a bare (vision, text) matrix, not an nn.Linear
            for pname, p in mod.named_parameters(recurse=False):
                if p.ndim == 2 and not isinstance(mod, nn.Embedding):
                    fin, fout = p.shape[1], p.shape[0]  # PEFT's reading of a 2-D parameter
                    modules.append(
                        ModuleInfo(f"{name}.{pname}", "projector", None, fin, fout, "param", tower)
                    )

    in_blocks = [x for x in modules if x.layer is not None and x.tower == "language"]
    return ArchInfo(
        family=str(getattr(config, "model_type", type(model).__name__)),
        n_layers=n_layers,
        hidden_size=dims["language"]["d"],
        base_params=_count_params(model),
        modules=modules,
        known=bool(in_blocks) and all(x.role != "other" for x in in_blocks),
        blocks_prefix=prefixes["language"] or "",
        tower_layers={"vision": v_layers} if prefixes.get("vision") else {},
    )


def meta_from_config(config) -> nn.Module:
    """Instantiate a model from a config on the meta device: shapes, no memory.

    Causal LMs first; vision-language models (LLaVA, Qwen2-VL) are image-text-to-text.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    with torch.device("meta"):
        try:
            return AutoModelForCausalLM.from_config(config)
        except ValueError:
            if getattr(config, "vision_config", None) is None:
                raise
            return AutoModelForImageTextToText.from_config(config)
