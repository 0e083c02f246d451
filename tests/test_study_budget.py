"""A study's `budget:` key: every placement matched to one trainable-parameter budget."""

from transformers import GPT2Config

from loraplace.arch import meta_from_config
from loraplace.study import expand, validate_study

MEDIUM = GPT2Config(n_embd=1024, n_layer=24, n_head=16)


def test_seed_placements_at_the_seed_ffn_budget_on_gpt2_medium():
    study = validate_study(
        {
            "model": "gpt2-medium",
            "placements": ["seed-full", "seed-attention", "seed-ffn", "attention"],
            "seeds": [0],
            "zero_shot": False,
            "budget": "seed-ffn@r16",
            "retain": None,
        }
    )
    specs, warnings = expand(study, target=meta_from_config(MEDIUM))
    got = {
        s.placement_name: sum(m["rank"] * (m["in_features"] + m["out_features"]) for m in s.modules)
        for s in specs
    }
    ranks = {s.placement_name: {m["rank"] for m in s.modules} for s in specs}
    budget = 1_966_080
    assert got["seed-ffn"] == budget and ranks["seed-ffn"] == {16}
    # seed-full: 72 modules, 393,216 params per rank -> r=5 (1,966,080: exactly on budget)
    assert ranks["seed-full"] == {5} and got["seed-full"] == 5 * 393_216
    # seed-attention: 270,336 per rank -> r=7 (1,892,352; r=8 would be 2,162,688)
    assert ranks["seed-attention"] == {7} and got["seed-attention"] == 1_892_352
    # attention: 147,456 per rank -> r=13 (1,916,928)
    assert ranks["attention"] == {13} and got["attention"] == 1_916_928
    assert all(v <= budget for v in got.values())
    assert any("seed-attention: budget 1,966,080 -> 1,892,352" in w for w in warnings)


def test_a_dora_study_spends_its_magnitudes_from_the_budget():
    study = validate_study(
        {
            "model": "gpt2-medium",
            "placements": ["seed-full", "seed-ffn"],
            "seeds": [0],
            "zero_shot": False,
            "budget": 1_966_080,
            "use_dora": True,
            "retain": None,
        }
    )
    specs, warnings = expand(study, target=meta_from_config(MEDIUM))
    ranks = {s.placement_name.split("@")[0]: {m["rank"] for m in s.modules} for s in specs}
    # seed-full: 221,184 magnitudes + 4 x 393,216; seed-ffn: 98,304 + 15 x 122,880
    assert ranks == {"seed-full": {4}, "seed-ffn": {15}}
    assert any("seed-full: budget 1,966,080 -> 1,794,048" in w for w in warnings)
    assert any("seed-ffn: budget 1,966,080 -> 1,941,504" in w for w in warnings)
    assert all(s.use_dora for s in specs)


def test_a_use_dora_grid_shares_one_rank_and_says_how_far_dora_exceeds_the_budget():
    study = validate_study(
        {
            "model": "gpt2-medium",
            "placements": ["seed-ffn"],
            "seeds": [0],
            "zero_shot": False,
            "budget": 1_966_080,
            "use_dora": [False, True],
            "retain": None,
        }
    )
    specs, warnings = expand(study, target=meta_from_config(MEDIUM))
    # seed-ffn: 122,880 params per rank -> r=16 exactly on budget, for both grid points
    assert {m["rank"] for s in specs for m in s.modules} == {16}
    assert {s.use_dora for s in specs} == {False, True}
    # the DoRA point adds 98,304 magnitudes (24 layers x (1024 + 4096)) over the budget
    assert any(
        "use_dora=true grid points train 2,064,384 params (+98,304 vs the budget)" in w
        for w in warnings
    )
