"""`loraplace inspect`, `plan` and `export` end to end, on configs saved to disk."""

import json

import pytest
from families import FAMILIES
from transformers import GPT2Config, LlamaConfig

from loraplace.cli import run_cli


@pytest.fixture(scope="module")
def gpt2_medium_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpt2-medium")
    GPT2Config(n_embd=1024, n_layer=24, n_head=16).save_pretrained(d)  # config.json only
    return str(d)


def test_plan_seed_study_json(gpt2_medium_dir, capsys):
    code = run_cli(
        [
            "plan",
            gpt2_medium_dir,
            "seed-full",
            "seed-attention",
            "seed-ffn",
            "attention",
            "--rank",
            "16",
            "--alpha",
            "32",
            "--json",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    got = {
        p["name"]: (p["trainable_params"], round(p["trainable_pct"], 2)) for p in data["placements"]
    }
    assert got == {
        "seed-full": (6_291_456, 1.74),
        "seed-attention": (4_325_376, 1.2),
        "seed-ffn": (1_966_080, 0.55),
        "attention": (2_359_296, 0.66),
    }
    seed_att = data["placements"][1]
    assert seed_att["by_role"]["mlp.down"]["modules"] == 24
    assert seed_att["by_role"]["mlp.down"]["paths"] == ["mlp.c_proj"]


def test_plan_text_says_seed_attention_adapts_mlp(gpt2_medium_dir, capsys):
    assert run_cli(["plan", gpt2_medium_dir, "seed-attention", "-r", "16"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "24 mlp.c_proj (mlp.down)" in text
    assert "4,325,376" in text


def test_inspect_json(gpt2_medium_dir, capsys):
    assert run_cli(["inspect", gpt2_medium_dir, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["base_params"] == 354_823_168 and data["n_layers"] == 24
    rows = {(r["role"], r["path"]): r for r in data["roles"]}
    assert rows[("attn.qkv", "attn.c_attn")]["out_features"] == 3072
    assert rows[("mlp.down", "mlp.c_proj")]["n_modules"] == 24
    assert len(data["modules"]) == 24 * 4 + 1


def test_llama_7b_config_only(tmp_path, capsys):
    LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    ).save_pretrained(tmp_path)
    assert run_cli(["plan", str(tmp_path), "all-linear", "-r", "16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["placements"][0]["trainable_params"] == 39_976_960


@pytest.mark.parametrize(
    "fmt, fname",
    [
        ("peft", "adapter_config.json"),
        ("axolotl", "axolotl.yaml"),
        ("llama-factory", "llama_factory.yaml"),
    ],
)
def test_export_reproduces_module_set(tmp_path, fmt, fname):
    import yaml

    model_dir = tmp_path / "m"
    FAMILIES["llama"]().save_pretrained(model_dir)
    out = tmp_path / "out"
    assert (
        run_cli(["export", str(model_dir), "qv", "--format", fmt, "-o", str(out), "-r", "4"]) == 0
    )
    text = (out / fname).read_text()
    names = [f"model.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in ("q", "v")]
    if fmt == "peft":
        cfg = json.loads(text)
        assert cfg["target_modules"] == names and cfg["r"] == 4 and cfg["peft_type"] == "LORA"
    elif fmt == "axolotl":
        cfg = yaml.safe_load(text)
        assert cfg["lora_target_modules"] == names and cfg["lora_r"] == 4
    else:
        cfg = yaml.safe_load(text)
        assert cfg["lora_target"].split(",") == names and cfg["lora_rank"] == 4


def test_peft_export_loads_back_and_matches(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model_dir = tmp_path / "m"
    FAMILIES["gpt2"]().save_pretrained(model_dir)
    spec = tmp_path / "x"
    assert run_cli(["export", str(model_dir), "seed-attention", "-o", str(spec), "-r", "2"]) == 0
    cfg = LoraConfig.from_pretrained(spec)
    peft_model = get_peft_model(AutoModelForCausalLM.from_config(FAMILIES["gpt2"]()), cfg)
    n = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert n == 2 * (2 * (32 + 96) + 2 * 64 + 2 * 160)


@pytest.mark.parametrize(
    "args, message",
    [
        (["plan", "{m}", "attention", "--layers", "99"], "layer 99 is out of range"),
        (["plan", "{m}", "atention"], 'did you mean "attention"'),
        (["plan", "{m}", "c_nope"], "matches no linear layer"),
        (["plan", "{m}", "attention", "-r", "0"], "rank 0 is invalid"),
        (["export", "{m}", "qv", "--format", "axolotl"], "fuses q, k and v"),
        (["export", "{m}", "attention", "--format", "deepspeed"], "unknown export format"),
        (["plan", "{missing}", "attention"], "{missing}"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, args, message):
    m = tmp_path / "m"
    FAMILIES["gpt2"]().save_pretrained(m)
    missing = str(tmp_path / "nope")
    args = [a.format(m=m, missing=missing) for a in args]
    code = run_cli(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err
    assert message.format(missing=missing) in err
    assert not list(tmp_path.glob("*.json"))


def test_the_cli_starts_without_torch():
    """Every verb registers without importing torch: `report`, `status`, `--help` start fast."""
    import subprocess
    import sys

    code = (
        "import sys; from loraplace.cli import _register; _register(); "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'matplotlib') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
