"""Role detection per family, from shapes and the module tree (table-driven)."""

import pytest
from families import FAMILIES
from torch import nn

from loraplace.arch import describe, meta_from_config

# family -> {path inside block 0: (role, in, out)}
EXPECTED = {
    "gpt2": {
        "attn.c_attn": ("attn.qkv", 32, 96),
        "attn.c_proj": ("attn.o", 32, 32),
        "mlp.c_fc": ("mlp.up", 32, 128),
        "mlp.c_proj": ("mlp.down", 128, 32),
    },
    "llama": {
        "self_attn.q_proj": ("attn.q", 32, 32),
        "self_attn.k_proj": ("attn.k", 32, 16),  # GQA: kv_heads x head_dim
        "self_attn.v_proj": ("attn.v", 32, 16),
        "self_attn.o_proj": ("attn.o", 32, 32),
        "mlp.gate_proj": ("mlp.gate", 32, 64),
        "mlp.up_proj": ("mlp.up", 32, 64),
        "mlp.down_proj": ("mlp.down", 64, 32),
    },
    "gpt_neox": {
        "attention.query_key_value": ("attn.qkv", 32, 96),
        "attention.dense": ("attn.o", 32, 32),
        "mlp.dense_h_to_4h": ("mlp.up", 32, 64),
        "mlp.dense_4h_to_h": ("mlp.down", 64, 32),
    },
    "opt": {
        "self_attn.q_proj": ("attn.q", 32, 32),
        "self_attn.k_proj": ("attn.k", 32, 32),
        "self_attn.v_proj": ("attn.v", 32, 32),
        "self_attn.out_proj": ("attn.o", 32, 32),
        "fc1": ("mlp.up", 32, 64),
        "fc2": ("mlp.down", 64, 32),
    },
    "phi3": {
        "self_attn.qkv_proj": ("attn.qkv", 32, 64),  # 32 (q) + 2 x 16 (k, v)
        "self_attn.o_proj": ("attn.o", 32, 32),
        "mlp.gate_up_proj": ("mlp.gate_up", 32, 128),
        "mlp.down_proj": ("mlp.down", 64, 32),
    },
}
EXPECTED["mistral"] = EXPECTED["llama"]
EXPECTED["qwen2"] = EXPECTED["llama"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_roles_per_family(family):
    arch = describe(meta_from_config(FAMILIES[family]()))
    assert arch.known and arch.n_layers == 2
    block0 = {}
    for m in arch.modules:
        if m.layer == 0:
            path = m.name.split(f"{arch.blocks_prefix}.0.", 1)[1]
            block0[path] = (m.role, m.in_features, m.out_features)
    assert block0 == EXPECTED[family]
    heads = [m for m in arch.modules if m.role == "lm_head"]
    assert len(heads) == 1 and heads[0].layer is None and heads[0].out_features == 100
    # every block has the same roles
    assert sum(1 for m in arch.modules if m.layer == 1) == len(EXPECTED[family])


def test_gpt2_conv1d_is_transposed_and_params_count_tied_once():
    arch = describe(meta_from_config(FAMILIES["gpt2"]()))
    c_attn = next(m for m in arch.modules if m.name.endswith("0.attn.c_attn"))
    assert c_attn.kind == "conv1d"
    # wte 100x32 + wpe 64x32 + per block (2 LN 4x32, c_attn 32x96+96, c_proj 32x32+32,
    # c_fc 32x128+128, c_proj 128x32+32) x 2 + ln_f 64; lm_head tied to wte.
    block = 4 * 32 + 32 * 96 + 96 + 32 * 32 + 32 + 32 * 128 + 128 + 128 * 32 + 32
    assert arch.base_params == 100 * 32 + 64 * 32 + 2 * block + 64


def test_unknown_architecture_keeps_linears_as_other():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.b = nn.Linear(8, 3)

    arch = describe(Odd())
    assert not arch.known
    assert [(m.name, m.role) for m in arch.modules] == [("a", "other"), ("b", "other")]
