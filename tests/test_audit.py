"""`loraplace audit` on adapters saved by PEFT itself, broken on purpose."""

import json
from pathlib import Path

import pytest
from families import peft_model_of_saved_config
from peft import LoraConfig

from loraplace.audit import audit
from loraplace.cli import run_cli

CONFIGS = Path(__file__).parent / "configs"


def _save(tmp_path, family, **lora) -> tuple[Path, int]:
    """A PEFT adapter of a tiny model built from tests/configs/<family>; (dir, PEFT count)."""
    peft_model = peft_model_of_saved_config(family, LoraConfig(**lora))
    out = tmp_path / family
    peft_model.save_pretrained(out)
    count = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    return out, count


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """Qwen2-MoE adapter: a rank_pattern key for an untargeted module, a dead target."""
    return _save(
        tmp_path_factory.mktemp("a"),
        "qwen2_moe",
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "v_proj", "shared_expert_gate", "c_attn"],
        target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
        rank_pattern={"k_proj": 4, "layers.0.self_attn.v_proj": 2},
    )


def test_audit_reports_the_rank_pattern_key_that_matched_nothing(broken):
    adapter, peft_count = broken
    result = audit(adapter, str(CONFIGS / "qwen2_moe"))
    assert result.trainable_params == peft_count == 18_384
    assert sum(u.params for u in result.units) == peft_count
    assert result.warnings == [
        "target_modules entry 'c_attn' matches no module",
        "rank_pattern key 'k_proj' matches no adapted module: its value 4 was never applied "
        "(PEFT ignores such keys silently)",
        "the expert router is adapted (2 module(s), e.g. model.layers.0.mlp.shared_expert_gate)"
        ": it changes which experts see which tokens",
    ]
    table = result.table()
    assert table["attn.v"] == {0: {2}, 1: {8}}  # the rank_pattern key that did match
    assert table["moe.gate_up"] == {0: {8}, 1: {8}} and table["moe.down"] == {0: {8}, 1: {8}}
    experts = [u for u in result.units if u.role == "moe.gate_up"]
    assert experts[0].experts == 4 and experts[0].name.endswith("mlp.experts.gate_up_proj")


def test_audit_flags_config_rank_that_the_weights_do_not_have(broken, tmp_path):
    adapter, _ = broken
    copy = tmp_path / "edited"
    copy.mkdir()
    (copy / "adapter_model.safetensors").write_bytes(
        (adapter / "adapter_model.safetensors").read_bytes()
    )
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["r"] = 4
    (copy / "adapter_config.json").write_text(json.dumps(config))
    result = audit(copy, str(CONFIGS / "qwen2_moe"))
    (warning,) = [w for w in result.warnings if "differs from the config" in w]
    assert warning.startswith("9 module(s) have a rank")  # all but layers.0 v_proj (r=2)


def test_audit_counts_modules_outside_the_language_tower(tmp_path):
    adapter, _ = _save(tmp_path, "llava", r=4, target_modules=["q_proj"])
    result = audit(adapter, str(CONFIGS / "llava"))
    assert result.table() == {"attn.q": {0: {4}, 1: {4}}, "vision:attn.q": {0: {4}, 1: {4}}}
    assert any(
        "2 adapted module(s) outside the language tower (2 vision)" in w for w in result.warnings
    )


def test_audit_cli(broken, capsys, tmp_path):
    adapter, _ = broken
    assert run_cli(["audit", str(adapter), "--model", str(CONFIGS / "qwen2_moe")]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "rank_pattern key 'k_proj' matches no adapted module" in text
    assert "trainable params=18,384" in text
    assert run_cli(["audit", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path} has no adapter_config.json: give a PEFT adapter directory"]


def test_audit_without_the_base_model_says_what_it_cannot_know(broken, tmp_path):
    adapter, _ = broken
    copy = tmp_path / "nobase"
    copy.mkdir()
    (copy / "adapter_model.safetensors").write_bytes(
        (adapter / "adapter_model.safetensors").read_bytes()
    )
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = None
    (copy / "adapter_config.json").write_text(json.dumps(config))
    result = audit(copy)
    assert result.family is None and result.trainable_params == 18_384
    assert result.warnings[:2] == [
        "the adapter names no base model: pass --model to read roles",
        "the adapter targets parameters (fused experts) and the base model is unknown: "
        "their ranks are shown as rank x experts; pass --model",
    ]
    assert {u.role for u in result.units} == {"?"}
    # the rank_pattern key that matched nothing is found from the weights alone
    assert any("rank_pattern key 'k_proj'" in w for w in result.warnings)
