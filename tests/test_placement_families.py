"""MoE, multimodal and hybrid families: roles, towers, and counts equal to PEFT's own.

The configs are tests/configs/<family>/config.json (written by make_configs.py); resolution
reads them on the meta device, PEFT counts on a tiny real model built from the same file.
"""

import re
import warnings
from pathlib import Path

import pytest
import torch
from families import peft_model_of_saved_config
from peft import get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

from loraplace.arch import describe, meta_from_config
from loraplace.errors import UserError
from loraplace.placement import lora_config, resolve

CONFIGS = Path(__file__).parent / "configs"
VISION = {"preset": "attention", "tower": "vision"}


def _config(family):
    return AutoConfig.from_pretrained(CONFIGS / family)


def _arch(family):
    config = _config(family)
    return describe(meta_from_config(config), config)


def _peft_count(family, rp) -> int:
    peft_model = peft_model_of_saved_config(family, lora_config(rp.modules))
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


# family -> {path inside a block of the language model: (role, in, out, experts)}
ROLES = {
    "mixtral": {
        "mlp.experts.gate_up_proj": ("moe.gate_up", 256, 1024, 8),
        "mlp.experts.down_proj": ("moe.down", 512, 256, 8),
        "mlp.gate.weight": ("moe.router", 256, 8, 1),
    },
    "qwen2_moe": {
        "mlp.experts.gate_up_proj": ("moe.gate_up", 64, 64, 4),
        "mlp.experts.down_proj": ("moe.down", 32, 64, 4),
        "mlp.shared_expert.gate_proj": ("moe.shared.gate", 64, 64, 1),
        "mlp.shared_expert.up_proj": ("moe.shared.up", 64, 64, 1),
        "mlp.shared_expert.down_proj": ("moe.shared.down", 64, 64, 1),
        "mlp.shared_expert_gate": ("moe.router", 64, 1, 1),
        "mlp.gate.weight": ("moe.router", 64, 4, 1),
    },
    "olmoe": {"mlp.experts.gate_up_proj": ("moe.gate_up", 64, 256, 4)},
    "qwen3_moe": {"mlp.experts.down_proj": ("moe.down", 32, 64, 4)},
    "deepseek_v3": {
        "self_attn.q_a_proj": ("attn.q_a", 64, 48, 1),
        "self_attn.q_b_proj": ("attn.q_b", 48, 96, 1),
        "self_attn.kv_a_proj_with_mqa": ("attn.kv_a", 64, 40, 1),
        "self_attn.kv_b_proj": ("attn.kv_b", 32, 128, 1),
        "self_attn.o_proj": ("attn.o", 64, 64, 1),
        "mlp.shared_experts.down_proj": ("moe.shared.down", 32, 64, 1),
    },
    "jamba": {
        "mamba.in_proj": ("ssm.in", 64, 256, 1),
        "mamba.x_proj": ("ssm.x", 128, 32, 1),
        "mamba.dt_proj": ("ssm.dt", 16, 128, 1),
        "mamba.out_proj": ("ssm.out", 128, 64, 1),
        "self_attn.q_proj": ("attn.q", 64, 64, 1),
        "feed_forward.experts.down_proj": ("moe.down", 128, 64, 4),
    },
    "falcon_h1": {
        "mamba.in_proj": ("ssm.in", 64, 280, 1),
        "self_attn.o_proj": ("attn.o", 64, 64, 1),
    },
}


@pytest.mark.parametrize("family", sorted(ROLES))
def test_roles_of_new_families(family):
    arch = _arch(family)
    assert arch.known
    got = {}
    for m in arch.modules:
        if m.layer is not None and m.tower == "language":
            path = m.name.split(f"{arch.blocks_prefix}.{m.layer}.", 1)[1]
            got.setdefault(path, (m.role, m.in_features, m.out_features, m.experts))
    for path, want in ROLES[family].items():
        assert got[path] == want, path


def test_hybrids_tell_attention_and_ssm_layers_apart():
    assert _arch("jamba").layer_kinds() == {0: "ssm", 1: "attention", 2: "ssm", 3: "attention"}
    assert _arch("falcon_h1").layer_kinds() == {0: "attention+ssm", 1: "attention+ssm"}
    # attention exists in layers 1 and 3 only: adapting all of it is full coverage, no warning
    rp = resolve("attention", _arch("jamba"), rank=4)
    assert sorted({m.layer for m in rp.modules}) == [1, 3] and rp.warnings == []


# (family, placement, trainable params at r=16 on the meta device; PEFT must agree)
COUNTS = [
    ("mixtral", "all-linear", 57_344),
    ("mixtral", "attention", 57_344),
    ("mixtral", "mlp", 524_288),  # 262,144 per layer: 16 x 8 x ((256+1024) + (512+256))
    ("mixtral", "moe.down", 196_608),  # an expert subset: the down projections only
    ("mixtral", "all", 581_632),
    ("qwen2_moe", "all-linear", 26_624),
    ("qwen2_moe", "attention", 14_336),
    ("qwen2_moe", "mlp", 40_960),
    ("qwen2_moe", "shared-experts", 12_288),
    ("qwen3_moe", "mlp", 28_672),
    ("olmoe", "all", 79_872),
    ("deepseek_v2", "attention", 20_736),
    ("deepseek_v3", "attention", 20_736),
    ("llava", "all-linear", 32_768),
    ("llava", "attention", 14_336),
    ("llava", "mlp", 18_432),
    ("llava", VISION, 8_192),
    ("llava", "projector", 3_584),
    ("qwen2_vl", VISION, 6_144),
    ("qwen2_vl", "projector", 7_168),
    ("gemma3", "all-linear", 32_768),
    ("gemma3", "projector", 1_536),  # one bare 2-D matrix (32 x 64), via target_parameters
    ("jamba", "all-linear", 58_880),
    ("jamba", "attention", 14_336),
    ("jamba", "mlp", 83_968),
    ("jamba", "ssm", 26_112),
    ("jamba", "moe.down", 24_576),
    ("falcon_h1", "all-linear", 43_776),
]


@pytest.mark.parametrize("family, placement, params", COUNTS)
def test_count_equals_peft(family, placement, params):
    rp = resolve(placement, _arch(family), rank=16)
    assert rp.trainable_params == params
    assert _peft_count(family, rp) == params


def test_peft_moe_conversion_trap_is_a_warning_and_real():
    """PEFT 0.21 moves DeepSeek's dense/shared gate_proj/up_proj/down_proj to the experts."""
    rp = resolve("all-linear", _arch("deepseek_v3"), rank=16)
    assert rp.trainable_params == 34_560
    (warning,) = [w for w in rp.warnings if "fused experts" in w and "moves" in w]
    assert "moves 6 target(s)" in warning and "mlp.gate_proj" in warning
    # the trap itself: PEFT adapts the experts (+22,528) and drops the 6 named (-13,824)
    assert _peft_count("deepseek_v3", rp) == 34_560 + 22_528 - 13_824


def test_mamba_out_proj_is_left_out_where_peft_refuses_it():
    rp = resolve("ssm", _arch("falcon_h1"), rank=16)
    assert {m.role for m in rp.modules} == {"ssm.in"}
    assert any("PEFT refuses LoRA on mamba.out_proj" in w for w in rp.warnings)
    assert _peft_count("falcon_h1", rp) == rp.trainable_params == 2 * 16 * (64 + 280)


def test_all_linear_says_it_skips_fused_experts():
    rp = resolve("all-linear", _arch("mixtral"), rank=16)
    assert {m.role for m in rp.modules} == {"attn.q", "attn.k", "attn.v", "attn.o"}
    (warning,) = rp.warnings
    assert "skips 4 fused expert tensor(s)" in warning
    assert "32,768 adapter params per rank" in warning  # 8 x ((256+1024) + (512+256))


def test_router_is_never_in_a_preset_but_can_be_named():
    arch = _arch("qwen2_moe")
    for preset in ("all-linear", "all", "mlp", "experts"):
        assert "moe.router" not in resolve(preset, arch, rank=1).by_role()
    (warning,) = [w for w in resolve("all-linear", arch, rank=1).warnings if "router" in w]
    assert warning == (
        "PEFT's own target_modules='all-linear' would also adapt 2 router linear(s) "
        "(mlp.shared_expert_gate); all-linear leaves routers out"
    )
    rp = resolve("moe.router", arch, rank=1)
    assert rp.by_role()["moe.router"]["modules"] == 4  # router weight + shared_expert_gate
    assert _peft_count("qwen2_moe", rp) == rp.trainable_params == 2 * ((64 + 4) + (64 + 1))


@pytest.mark.parametrize(
    "family, selector, message",
    [
        ("mixtral", "0-3", "fused 3-D tensors (mlp.experts.gate_up_proj)"),
        ("mixtral", "top:2", "needs routing counts"),
        ("mixtral", "0-9", "fused 3-D tensors"),
    ],
)
def test_expert_selectors_on_fused_experts_are_refused(family, selector, message):
    with pytest.raises(UserError, match=re.escape(message)):
        resolve({"preset": "mlp", "experts": selector}, _arch(family), rank=4)


def test_a_tower_the_model_does_not_have_is_a_user_error():
    with pytest.raises(UserError, match="mixtral has no vision tower: use tower: language"):
        resolve(VISION, _arch("mixtral"), rank=4)


def test_layer_index_of_experts_is_the_decoder_layer():
    rp = resolve({"preset": "experts", "layers": "1"}, _arch("mixtral"), rank=4)
    assert [(m.name, m.layer) for m in rp.modules] == [
        ("model.layers.1.mlp.experts.gate_up_proj", 1),
        ("model.layers.1.mlp.experts.down_proj", 1),
    ]


def test_suffix_reaching_into_the_vision_tower_warns_with_counts():
    rp = resolve("q_proj+v_proj", _arch("llava"), rank=4)
    assert len(rp.modules) == 8  # PEFT's suffix semantics: both towers
    q, v = [w for w in rp.warnings if "reaches beyond" in w]
    assert "'q_proj' reaches beyond the language tower: it matches 2 language, 2 vision" in q
    assert "2 vision" in v
    # roles stay in their tower: no warning
    assert resolve("qv", _arch("llava"), rank=4).warnings == []


def test_suffix_that_misses_fused_experts_warns():
    rp = resolve("down_proj", _arch("qwen2_moe"), rank=4)
    assert {m.role for m in rp.modules} == {"moe.shared.down"}
    assert any("does not reach the 2 fused expert tensor(s)" in w for w in rp.warnings)


class _PerExpertMoE(torch.nn.Module):
    """A remote-code style MoE block: one nn.Linear per expert (Mixtral's w1/w2/w3 names)."""

    def __init__(self, n_layers=2, d=16, ffn=32, n_experts=4):
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(
            model_type="toy_moe",
            num_hidden_layers=n_layers,
            hidden_size=d,
            num_attention_heads=2,
            intermediate_size=ffn,
            num_local_experts=n_experts,
        )
        self.layers = torch.nn.ModuleList()
        for _ in range(n_layers):
            block = torch.nn.Module()
            block.self_attn = torch.nn.Module()
            for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
                setattr(block.self_attn, p, torch.nn.Linear(d, d, bias=False))
            block.moe = torch.nn.Module()
            block.moe.gate = torch.nn.Linear(d, n_experts, bias=False)
            block.moe.experts = torch.nn.ModuleList()
            for _ in range(n_experts):
                e = torch.nn.Module()
                e.w1, e.w3 = (
                    torch.nn.Linear(d, ffn, bias=False),
                    torch.nn.Linear(d, ffn, bias=False),
                )
                e.w2 = torch.nn.Linear(ffn, d, bias=False)
                block.moe.experts.append(e)
            self.layers.append(block)


def test_expert_subset_on_per_expert_modules_matches_peft():
    model = _PerExpertMoE()
    arch = describe(model)
    roles = {(m.role, m.expert) for m in arch.modules if m.layer == 1 and "experts" in m.name}
    assert roles == {(f"moe.{p}", i) for p in ("gate", "up", "down") for i in range(4)}
    assert {m.role for m in arch.modules if m.name.endswith("moe.gate")} == {"moe.router"}
    rp = resolve({"preset": "experts", "experts": "0-1"}, arch, rank=4)
    # 2 layers x 2 experts x 3 projections x r=4 x (16 + 32); the layer is the block's
    assert rp.trainable_params == 2 * 2 * 3 * 4 * 48
    assert sorted({m.layer for m in rp.modules}) == [0, 1]
    assert all(".experts.0." in m.name or ".experts.1." in m.name for m in rp.modules)
    config = lora_config(rp.modules)
    config.task_type = None  # a bare nn.Module, not a causal LM
    peft_model = get_peft_model(model, config)
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) == 2_304


# The "done when": plan on four families, counts equal to PEFT's (checked above).
PLAN = {
    "mixtral": {"all-linear": 57_344, "attention": 57_344, "mlp": 524_288, "moe.down": 196_608},
    "qwen2_moe": {"all-linear": 26_624, "attention": 14_336, "mlp": 40_960, "moe.down": 12_288},
    "llava": {"all-linear": 32_768, "attention": 14_336, "mlp": 18_432, "projector": 3_584},
    "jamba": {"all-linear": 58_880, "attention": 14_336, "mlp": 83_968, "moe.down": 24_576},
}


@pytest.mark.parametrize("family", sorted(PLAN))
def test_plan_cli_on_new_families(family, capsys):
    import json

    from loraplace.cli import run_cli

    argv = ["plan", str(CONFIGS / family), *PLAN[family], "--rank", "16", "--json"]
    assert run_cli(argv) == 0
    got = json.loads(capsys.readouterr().out)["placements"]
    assert {p["name"]: p["trainable_params"] for p in got} == PLAN[family]


def test_per_role_ranks_reach_fused_experts_through_rank_pattern():
    spec = {"preset": "all", "rank": 8, "role_rank": {"moe.down": 4, "attn.q": 2}}
    rp = resolve(spec, _arch("mixtral"))
    config = lora_config(rp.modules)
    assert config.target_parameters == [
        f"model.layers.{i}.mlp.experts.{p}" for i in (0, 1) for p in ("gate_up_proj", "down_proj")
    ]
    assert config.rank_pattern[r"model\.layers\.0\.mlp\.experts\.down_proj"] == 4
    # attn 2 x (2(256+256) + 8(256+128)x2 + 8(256+256)); experts 2 x (8x8x1280 + 4x8x768)
    assert rp.trainable_params == 2 * (1024 + 6144 + 4096) + 2 * (81_920 + 24_576) == 235_520
    assert _peft_count("mixtral", rp) == 235_520


@pytest.mark.parametrize(
    "option, message",
    [
        ({"dropout": 0.1}, "dropout cannot be used with fused expert parameters"),
        ({"use_dora": True}, "use_dora cannot be used"),
        ({"lora_bias": True}, "set lora_bias off"),
    ],
)
def test_options_peft_refuses_on_fused_experts(option, message):
    rp = resolve("experts", _arch("mixtral"), rank=4)
    with pytest.raises(UserError, match=message):
        lora_config(rp.modules, **option)
    lora_config(resolve("attention", _arch("mixtral"), rank=4).modules, **option)  # fine there


def test_fused_expert_adapters_receive_gradients():
    """The resolved config trains: one step's loss reaches the experts' LoRA B."""
    config = _config("qwen2_moe")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(
            AutoModelForCausalLM.from_config(config),
            lora_config(resolve("experts", _arch("qwen2_moe"), rank=4).modules),
        )
    ids = torch.randint(0, 100, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert len(grads) == 8  # 2 layers x 2 fused tensors x (A, B)
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)
