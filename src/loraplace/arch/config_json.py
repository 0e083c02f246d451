"""A LLaMA-style model's layout read from its config.json alone: no torch, no transformers.

(LLaMA, Mistral and Gemma 3's text model, whose projections are LLaMA's.)

``plan`` and ``inspect`` only need shapes. Building the model on the meta device costs
seconds of imports (torch, transformers' modeling code) for a layout that, in the LLaMA
family, follows from a handful of config numbers. This reader covers only families whose
layout it knows exactly and configs that spell every number out (``save_pretrained``
writes them all); anything else returns None and goes the meta-device way.
``tests/test_arch_config_json.py`` checks it equals ``describe`` on the meta model.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from loraplace.arch.describe import _dims, _outside_blocks_role
from loraplace.arch.layout import ArchInfo, ModuleInfo
from loraplace.arch.roles import block_role

FAMILIES = ("llama", "mistral", "gemma3_text")  # q/k/v/o + gate/up/down and RMSNorms only
# RMSNorm weights per layer: (hidden-wide, head-wide). Gemma 3 norms before and after both
# attention and MLP, and normalises q and k per head (q_norm, k_norm).
NORMS = {"llama": (2, 0), "mistral": (2, 0), "gemma3_text": (4, 2)}
NEEDED = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "tie_word_embeddings",
)


def describe_config_json(path: str | Path) -> ArchInfo | None:
    """The ArchInfo of the model whose config.json is in directory ``path``, or None."""
    file = Path(path).expanduser() / "config.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(data, dict)
        or data.get("model_type") not in FAMILIES
        or any(data.get(k) is None for k in NEEDED)
        or data.get("quantization_config")  # packed weights: the meta model counts them
    ):
        return None
    cfg = SimpleNamespace(**data)
    dims = _dims(cfg)
    d, n_layers, vocab = dims["d"], int(cfg.num_hidden_layers), int(cfg.vocab_size)
    ffn = int(cfg.intermediate_size)
    shapes = [
        ("self_attn.q_proj", d, dims["q"]),
        ("self_attn.k_proj", d, dims["kv"]),
        ("self_attn.v_proj", d, dims["kv"]),
        ("self_attn.o_proj", dims["q"], d),
        ("mlp.gate_proj", d, ffn),
        ("mlp.up_proj", d, ffn),
        ("mlp.down_proj", ffn, d),
    ]
    modules = [
        ModuleInfo(
            f"model.layers.{i}.{rel}", block_role(rel, fin, fout, dims), i, fin, fout, "linear"
        )
        for i in range(n_layers)
        for rel, fin, fout in shapes
    ]
    head_role = _outside_blocks_role("lm_head", d, vocab, "language", d, vocab)
    modules.append(ModuleInfo("lm_head", head_role, None, d, vocab, "linear"))
    attn_bias = dims["q"] + 2 * dims["kv"] + d if data.get("attention_bias") else 0
    mlp_bias = 2 * ffn + d if data.get("mlp_bias") else 0
    n_wide, n_head = NORMS[str(cfg.model_type)]
    head_dim = dims["q"] // int(cfg.num_attention_heads)
    norms = n_wide * d + n_head * head_dim
    per_layer = sum(fin * fout for _, fin, fout in shapes) + attn_bias + mlp_bias + norms
    embeddings = vocab * d * (1 if cfg.tie_word_embeddings else 2)
    return ArchInfo(
        family=str(cfg.model_type),
        n_layers=n_layers,
        hidden_size=d,
        base_params=embeddings + n_layers * per_layer + d,  # + the final norm
        modules=modules,
        known=all(m.role != "other" for m in modules if m.layer is not None),
        blocks_prefix="model.layers",
        tower_layers={},
    )
