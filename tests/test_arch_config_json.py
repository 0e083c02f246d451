"""A LLaMA-style layout read from config.json alone equals ``describe`` on the meta model,
and ``plan`` on such a config imports no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from loraplace.arch import describe, meta_from_config
from loraplace.arch.config_json import describe_config_json
from loraplace.models import load_config

SMALL = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=4,
    vocab_size=128,
)


@pytest.mark.parametrize(
    "family, extra",
    [
        ("llama", {"num_key_value_heads": 4}),
        ("llama", {"num_key_value_heads": 2, "tie_word_embeddings": True}),  # GQA, tied
        ("llama", {"num_key_value_heads": 1, "attention_bias": True, "mlp_bias": True}),
        ("llama", {"num_key_value_heads": 2, "head_dim": 32}),  # q wider than hidden
        ("mistral", {"num_key_value_heads": 2}),
        # Gemma 3 (as gemma-3-270m): MQA, a head wider than hidden / heads, q/k norms
        ("gemma3_text", {"num_key_value_heads": 1, "head_dim": 32, "tie_word_embeddings": True}),
    ],
)
def test_config_json_layout_equals_the_meta_model(tmp_path, family, extra):
    from transformers import AutoConfig

    AutoConfig.for_model(family, **SMALL, **extra).save_pretrained(tmp_path)
    config = load_config(str(tmp_path))
    expected = describe(meta_from_config(config), config)
    got = describe_config_json(tmp_path)
    assert got == expected
    assert got.base_params == sum(p.numel() for p in meta_from_config(config).parameters())


def test_other_families_and_partial_configs_go_the_meta_way(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8}))
    assert describe_config_json(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", **SMALL}))
    assert describe_config_json(tmp_path) is None  # kv heads, tying: transformers' defaults
    assert describe_config_json(tmp_path / "nowhere") is None


def test_plan_on_a_llama_config_imports_no_torch(tmp_path):
    from transformers import AutoConfig

    AutoConfig.for_model("llama", **SMALL, num_key_value_heads=2).save_pretrained(tmp_path)
    code = (
        "import sys\nfrom loraplace.cli import run_cli\n"
        f"rc = run_cli(['plan', {str(tmp_path)!r}, 'attention'])\n"
        "print('RESULT', rc, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == "RESULT 0 False False", out.stderr[-2000:]
    assert "self_attn.q_proj" in out.stdout


def test_the_families_read_from_config_json_have_no_moe_conversion():
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping

    from loraplace.arch.config_json import FAMILIES
    from loraplace.placement.peft_limits import NO_CONVERSION

    assert set(FAMILIES) <= NO_CONVERSION
    assert all(get_checkpoint_conversion_mapping(f) is None for f in NO_CONVERSION)
