"""The study file: validation with one-line errors, overrides, ids and expansion."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from transformers import GPT2Config

from loraplace.defaults import default_study_config
from loraplace.errors import UserError
from loraplace.study import apply_overrides, expand, load_study, parse_override, validate_study


def test_default_study_validates_to_the_documented_settings():
    s = load_study(None)
    t = s.train_settings()
    assert (s.model, s.dataset, s.ranks, s.seeds) == ("tiny-markov", "markov-mix", [8], [0, 1, 2])
    assert s.placements == ["seed-full", "seed-attention", "seed-ffn", "attention"]
    assert (t.steps, t.batch_size, t.block_size, t.lr, t.eval_every) == (120, 16, 128, 2e-3, 40)
    assert t.warmup_steps == 10
    assert s.out_dir.as_posix() == "runs/default"


def test_example_default_study_file_is_the_packaged_default():
    """The example is a byte-identical copy of the packaged YAML that ``loraplace run`` reads."""
    from importlib.resources import files

    packaged = files("loraplace") / "default_study.yaml"
    assert Path("examples/default_study.yaml").read_bytes() == packaged.read_bytes()
    assert default_study_config() == yaml.safe_load(packaged.read_text())
    with open("examples/default_study.yaml") as f:
        from_file = validate_study(yaml.safe_load(f))
    assert from_file.study_id == validate_study(default_study_config()).study_id


@pytest.mark.parametrize(
    "text, path, value",
    [
        ("train.lr=1e-3", ["train", "lr"], "1e-3"),  # YAML 1.1 reads 1e-3 as a string ...
        ("train.lr=0.001", ["train", "lr"], 0.001),
        ("seeds=[0,1]", ["seeds"], [0, 1]),
        ("retain=null", ["retain"], None),
        ("name=my study", ["name"], "my study"),
        ("zero_shot=false", ["zero_shot"], False),
    ],
)
def test_parse_override(text, path, value):
    assert parse_override(text) == (path, value)


def test_overrides_set_nested_keys_and_validate():
    s = load_study(None, ["train.lr=1e-3", "seeds=[0,1]", "eval.every=25", "rank=[4,8]"])
    t = s.train_settings()
    assert t.lr == 1e-3  # ... and validation turns it into the float
    assert s.seeds == [0, 1]
    assert t.eval_every == 25
    assert s.ranks == [4, 8]
    raw = apply_overrides({"train": {"lr": 1}}, ["train.steps=5", "eval.batch_size=8"])
    assert raw == {"train": {"lr": 1, "steps": 5}, "eval": {"batch_size": 8}}


def test_study_id_is_a_hash_of_the_validated_config_without_out():
    a = load_study(None)
    assert a.study_id == load_study(None, ["out=elsewhere"]).study_id
    assert a.study_id == load_study(None, ["train.lr=0.002"]).study_id  # same value, same id
    assert a.study_id != load_study(None, ["train.lr=0.001"]).study_id


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.lrr=1"], "unknown key 'train.lrr' (did you mean \"lr\"?)"),
        (["sedes=[1]"], "unknown key 'sedes' (did you mean \"seeds\"?)"),
        (["eval.evry=3"], "unknown key 'eval.evry' (did you mean \"every\"?)"),
        (["train.steps=many"], "key 'train.steps': Input should be a valid integer"),
        (["rank=[8,x]"], "key 'rank.1': Input should be a valid integer"),
        (["train.precision=fp16"], "key 'train.precision': Input should be 'fp32', 'bf16' or"),
        (["seeds=[1,1]"], "key 'seeds': Value error, seeds must be distinct"),
        (["seeds=[]"], "seeds is empty"),
        (["lr"], "override 'lr' is not key=value"),
    ],
)
def test_bad_studies_fail_with_one_line(overrides, message):
    with pytest.raises(UserError) as exc:
        load_study(None, overrides)
    text = str(exc.value)
    assert message in text
    assert "\n" not in text


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="is not valid YAML"):
        load_study(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_study(tmp_path / "nope.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="must be a mapping"):
        load_study(listy)


def _gpt2():
    return GPT2Config(n_layer=4, n_embd=64, n_head=4, vocab_size=100, n_positions=64)


def test_expand_gives_zero_shot_then_placements_by_seed():
    s = validate_study(
        {
            "placements": ["seed-full", {"name": "top-mlp", "roles": ["mlp"], "layers": "last:2"}],
            "seeds": [0, 1],
            "rank": 4,
            "retain": None,
        }
    )
    specs, warnings = expand(s, target=_gpt2(), fingerprints={"data": "d", "model": "m"})
    assert [(x.placement_name, x.kind, x.seed) for x in specs] == [
        ("zero-shot", "zero-shot", 0),  # one evaluation: no seed changes it
        ("seed-full", "lora", 0),
        ("seed-full", "lora", 1),
        ("top-mlp", "lora", 0),
        ("top-mlp", "lora", 1),
    ]
    # seed-full: c_attn (64->192), attn.c_proj, c_fc (64->256), mlp.c_proj, 4 layers, r=4
    full = specs[1]
    assert len(full.modules) == 16
    assert sum(
        m["rank"] * (m["in_features"] + m["out_features"]) for m in full.modules
    ) == 4 * 4 * ((64 + 192) + (64 + 64) + (64 + 256) + (256 + 64))
    assert {m["layer"] for m in specs[3].modules} == {2, 3}
    assert all(m["alpha"] == 8.0 for m in full.modules)  # default rule: alpha = 2r
    assert any("c_proj" in w for w in warnings)  # the seed's trap is reported
    assert len({x.run_id for x in specs}) == 5
    assert specs[2].fingerprints == {"data": "d", "model": "m"}


def test_rank_sweep_labels_and_own_rank_kept():
    s = validate_study(
        {
            "placements": ["seed-ffn", {"name": "ffn-r1", "target_modules": ["c_fc"], "rank": 1}],
            "rank": [2, 4],
            "seeds": [0],
            "zero_shot": False,
            "retain": None,
        }
    )
    specs, _ = expand(s, target=_gpt2())
    assert [(x.placement_name, x.modules[0]["rank"]) for x in specs] == [
        ("seed-ffn@r2", 2),
        ("seed-ffn@r4", 4),
        ("ffn-r1", 1),
    ]


@pytest.mark.parametrize(
    "placement, message",
    [
        ("seed-fulll", "unknown placement 'seed-fulll'"),
        ({"target_modules": ["q_proj"]}, "matches no linear layer"),
        ({"roles": ["attn"], "layers": "7"}, "layer"),
    ],
)
def test_placements_that_match_nothing_are_user_errors(placement, message):
    s = validate_study({"placements": [placement], "seeds": [0], "retain": None})
    with pytest.raises(UserError, match=message):
        expand(s, target=_gpt2())


def test_seed_study_example_resolves_to_the_seed_counts():
    s = load_study("examples/seed_study.yaml")
    gpt2_medium = GPT2Config(n_layer=24, n_embd=1024, n_head=16)
    specs, warnings = expand(s, target=gpt2_medium)
    trainable = {
        x.placement_name: sum(m["rank"] * (m["in_features"] + m["out_features"]) for m in x.modules)
        for x in specs
    }
    assert trainable == {
        "zero-shot": 0,
        "seed-full": 6_291_456,
        "seed-attention": 4_325_376,
        "seed-ffn": 1_966_080,
        "attention": 2_359_296,
    }
    assert len(specs) == 13  # 4 placements x 3 seeds + one zero-shot evaluation
