"""The role vocabulary and the rules that give one linear layer of a block its role.

Roles are decided from shapes (hidden size, heads, kv-heads, intermediate size) with the
module's own name breaking ties, except where a family's names are the only evidence:
DeepSeek's low-rank attention (MLA), mixture-of-experts blocks (routed, shared, router)
and Mamba mixers, whose projections have no shape a dense block would give them.
"""

from __future__ import annotations

import re

ROLES = (
    "attn.qkv",  # fused q/k/v (GPT-2 c_attn, NeoX query_key_value, Phi-3 qkv_proj)
    "attn.q",
    "attn.k",
    "attn.v",
    "attn.q_a",  # MLA (DeepSeek-V2/V3): q down-projection to q_lora_rank
    "attn.q_b",  # MLA: q up-projection from q_lora_rank to the heads
    "attn.kv_a",  # MLA: joint kv down-projection (with the shared rope key)
    "attn.kv_b",  # MLA: kv up-projection from kv_lora_rank to the heads
    "attn.o",  # attention output projection
    "mlp.gate_up",  # fused gate+up (Phi-3 gate_up_proj)
    "mlp.gate",
    "mlp.up",
    "mlp.down",
    "moe.gate_up",  # routed experts, gate+up fused (transformers 5: one 3-D parameter)
    "moe.gate",
    "moe.up",
    "moe.down",
    "moe.shared.gate",  # shared (always-on) experts: Qwen2-MoE, DeepSeek
    "moe.shared.up",
    "moe.shared.down",
    "moe.router",  # expert router / shared-expert gate: never adapted by a preset
    "ssm.in",  # Mamba mixer input projection
    "ssm.x",  # Mamba-1 x_proj (dt, B, C from the conv output)
    "ssm.dt",  # Mamba-1 dt_proj
    "ssm.out",  # Mamba mixer output projection
    "projector",  # multimodal projector between a vision tower and the language model
    "lm_head",
    "other",  # a linear layer whose role could not be read: adapt it by pattern
)

# Routed-expert roles (the expert selector applies to these).
EXPERT_ROLES = ("moe.gate_up", "moe.gate", "moe.up", "moe.down")

_ATTN_HINTS = ("attn", "attention")
_MLP_HINTS = ("mlp", "ffn", "feed", "fc1", "fc2")
_SSM_HINTS = ("mamba", "mixer", "ssm")
_Q, _K, _V = (
    ("q", "query", "q_proj", "wq"),
    ("k", "key", "k_proj", "wk"),
    ("v", "value", "v_proj", "wv"),
)
_MLA = {  # DeepSeek's multi-head latent attention
    "q_a_proj": "attn.q_a",
    "q_b_proj": "attn.q_b",
    "kv_a_proj_with_mqa": "attn.kv_a",
    "kv_a_proj": "attn.kv_a",
    "kv_b_proj": "attn.kv_b",
}
_SSM = {"in_proj": "ssm.in", "x_proj": "ssm.x", "dt_proj": "ssm.dt", "out_proj": "ssm.out"}
# Expert projections by leaf name: transformers' names and Mixtral's original w1/w2/w3.
_EXPERT_LEAF = {
    "gate_up_proj": "gate_up",
    "gate_up": "gate_up",
    "w13": "gate_up",
    "gate_proj": "gate",
    "w1": "gate",
    "up_proj": "up",
    "w3": "up",
    "down_proj": "down",
    "w2": "down",
}
_ROUTER_LEAVES = ("router", "shared_expert_gate")
EXPERT_INDEX = re.compile(r"(?:^|\.)experts\.(\d+)\.")


def tokens(rel: str) -> list[str]:
    return [t for t in re.split(r"[._]", rel.lower()) if t]


def _name_says(rel: str, hints: tuple[str, ...]) -> bool:
    leaf = rel.rsplit(".", 1)[-1].lower()
    return leaf in hints or any(leaf.startswith(h + "_") for h in hints if len(h) == 1)


def expert_role(leaf: str, shared: bool) -> str:
    """moe.<proj> or moe.shared.<proj> for an expert projection's leaf name."""
    proj = _EXPERT_LEAF.get(leaf.lower())
    if proj is None:
        return "other"
    if shared:
        return "other" if proj == "gate_up" else f"moe.shared.{proj}"
    return f"moe.{proj}"


def _moe_role(rel: str, fin: int, fout: int, dims: dict[str, int]) -> str | None:
    """The role of a linear inside a mixture-of-experts block, or None outside one."""
    leaf = rel.rsplit(".", 1)[-1].lower()
    if leaf in _ROUTER_LEAVES or (leaf == "gate" and dims.get("experts") == fout):
        return "moe.router"
    if "shared_expert" in rel or "shared_experts" in rel:
        return expert_role(leaf, shared=True)
    if EXPERT_INDEX.search(rel):
        return expert_role(leaf, shared=False)
    return None


def block_role(rel: str, fin: int, fout: int, dims: dict[str, int]) -> str:
    """Role of a linear layer at relative name ``rel`` inside one block."""
    d, q_dim, kv_dim, ffn = dims["d"], dims["q"], dims["kv"], dims["ffn"]
    toks = tokens(rel)
    leaf = rel.rsplit(".", 1)[-1].lower()
    moe = _moe_role(rel, fin, fout, dims)
    if moe is not None:
        return moe
    if any(h in t for t in toks[:-1] for h in _SSM_HINTS) and not any(
        h in t for t in toks for h in _ATTN_HINTS
    ):
        return _SSM.get(leaf, "other")
    in_attn = any(h in t for t in toks[:-1] for h in _ATTN_HINTS) or "attn" in toks[-1]
    in_mlp = any(h in t for t in toks for h in _MLP_HINTS)
    if in_attn and dims.get("mla"):
        # MLA: names are the evidence (q_proj and o_proj shapes follow the head dims)
        return _MLA.get(leaf) or {"q_proj": "attn.q", "o_proj": "attn.o"}.get(leaf, "other")
    if in_attn and fin == d and fout == q_dim + 2 * kv_dim:
        return "attn.qkv"
    if in_attn or (not in_mlp and _name_says(rel, _Q + _K + _V)):
        return _attention_role(rel, fin, fout, dims)
    # MLP (any linear in the block outside attention)
    if fin == d and ffn and fout == 2 * ffn:
        return "mlp.gate_up"
    if fin == d and (fout == ffn or not ffn):
        return "mlp.gate" if "gate" in leaf or leaf == "w1" else "mlp.up"
    if fout == d and (fin == ffn or not ffn):
        return "mlp.down"
    return "other"


def _attention_role(rel: str, fin: int, fout: int, dims: dict[str, int]) -> str:
    d, q_dim, kv_dim = dims["d"], dims["q"], dims["kv"]
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
