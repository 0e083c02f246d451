"""Every export loaded back the way its trainer loads it, compared with the placement."""

from pathlib import Path

import pytest
import yaml
from transformers import AutoConfig

from loraplace.arch import describe, meta_from_config
from loraplace.cli import run_cli
from loraplace.errors import UserError
from loraplace.placement import resolve
from loraplace.placement.export import export_placement
from loraplace.placement.roundtrip import (
    adapted_by_peft,
    serving_warnings,
    trainer_config,
    verified_export,
    verify_export,
)

CONFIGS = Path(__file__).parent / "configs"
VISION = {"preset": "all-linear", "tower": "vision"}


def _resolved(family, placement, rank=8):
    config = AutoConfig.from_pretrained(CONFIGS / family)
    return config, resolve(placement, describe(meta_from_config(config), config), rank=rank)


@pytest.mark.parametrize(
    "family, placement, fmt, n_modules",
    [
        ("mixtral", "all", "peft", 12),  # 8 attention linears + 4 fused expert tensors
        ("mixtral", "all", "axolotl", 12),
        ("qwen2_moe", "mlp", "peft", 10),
        ("qwen2_moe", "mlp", "axolotl", 10),
        ("llava", "all-linear", "llama-factory", 14),
        ("llava", VISION, "llama-factory", 12),  # needs freeze_vision_tower: false
        ("llava", "projector", "axolotl", 2),
        ("jamba", "all-linear", "llama-factory", 22),
        ("jamba", "all-linear", "peft", 22),
    ],
)
def test_round_trip(family, placement, fmt, n_modules):
    config, rp = _resolved(family, placement)
    files, _ = verified_export(rp, fmt, config, base_model=family)
    got = adapted_by_peft(
        meta_from_config(config), trainer_config(fmt, files, meta_from_config(config))
    )
    assert len(got) == len(rp.modules) == n_modules
    assert got == {m.name: (m.rank, float(m.alpha)) for m in rp.modules}


def test_axolotl_carries_fused_experts_as_target_parameters():
    config, rp = _resolved("mixtral", "experts")
    files, _ = verified_export(rp, "axolotl", config, base_model="m")
    doc = yaml.safe_load(files["axolotl.yaml"])
    assert doc["lora_target_modules"] == [] and doc["lora_alpha"] == 16
    assert doc["lora_target_parameters"] == [
        f"model.layers.{i}.mlp.experts.{p}" for i in (0, 1) for p in ("gate_up_proj", "down_proj")
    ]


def test_llama_factory_refuses_fused_experts():
    config, rp = _resolved("mixtral", "experts")
    with pytest.raises(UserError, match="need PEFT's target_parameters"):
        verified_export(rp, "llama-factory", config, base_model="m")


def test_a_frozen_vision_tower_is_a_mismatch_not_a_file():
    config, rp = _resolved("llava", "q_proj")  # PEFT suffix semantics: 2 language, 2 vision
    files = export_placement(rp, "llama-factory", base_model="m")
    doc = yaml.safe_load(files["llama_factory.yaml"])
    del doc["freeze_vision_tower"]  # LLaMA-Factory's default: frozen, targets dropped
    with pytest.raises(
        UserError, match=r"2 planned module\(s\) not adapted \(e.g. model.vision_tower"
    ):
        verify_export(rp, "llama-factory", {"f.yaml": yaml.safe_dump(doc)}, config)


def test_peft_rewriting_deepseek_mlp_names_is_an_error():
    config, rp = _resolved("deepseek_v3", "all-linear")
    with pytest.raises(UserError) as exc:
        verified_export(rp, "peft", config, base_model="m")
    message = str(exc.value)
    assert "6 planned module(s) not adapted (e.g. model.layers.0.mlp.gate_proj)" in message
    assert "2 unplanned module(s) adapted (e.g. model.layers.1.mlp.experts." in message


def test_serving_warnings():
    _, rp = _resolved("llava", VISION, rank=24)
    warnings = serving_warnings(rp)
    assert warnings[0].endswith("serve this rank-24 adapter with --max-lora-rank 32")
    assert "12 vision module(s)" in warnings[1] and "ignored when served" in warnings[1]
    _, rp = _resolved("mixtral", "attention", rank=16)
    assert serving_warnings(rp) == []


def test_export_cli_refuses_with_one_line(tmp_path, capsys):
    argv = ["export", str(CONFIGS / "deepseek_v3"), "all-linear", "-o", str(tmp_path / "out")]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not load back as planned" in err[0]
    assert not (tmp_path / "out").exists()
