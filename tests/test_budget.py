"""Equal-budget rank matching and budgeted allocation, on exact shape-only accounting."""

import pytest
import torch
from families import FAMILIES
from peft import get_peft_model
from transformers import AutoModelForCausalLM, GPT2Config

from loraplace.arch import describe, meta_from_config
from loraplace.budget import allocate, match_budget
from loraplace.budget.matching import parse_budget
from loraplace.errors import UserError
from loraplace.placement import lora_config, parse_placement, resolve
from loraplace.placement.export import export_placement

GPT2_MEDIUM = GPT2Config(n_embd=1024, n_layer=24, n_head=16)
SEED_FFN_BUDGET = 1_966_080  # seed-ffn at r=16 on GPT-2 medium: the seed's 0.55 %


@pytest.fixture(scope="module")
def medium():
    return describe(meta_from_config(GPT2_MEDIUM))


@pytest.fixture(scope="module")
def tiny_llama():
    return describe(meta_from_config(FAMILIES["llama"]()))


@pytest.mark.parametrize(
    "budget, expected",
    [
        (1966080, 1_966_080),
        ("1966080", 1_966_080),
        ("1,966,080", 1_966_080),
        ("2M", 2_000_000),
        ("1.5k", 1_500),
        ("seed-ffn@r16", 1_966_080),
        ("seed-full@r16", 6_291_456),
        # PEFT's convention, trainable / (base + trainable): the seed's 1.74 % and 0.55 %
        # are rounded, so they land just below the counts they were printed for.
        ("0.55%", 1_962_320),
        ("1.74%", 6_283_251),
    ],
)
def test_parse_budget(medium, budget, expected):
    assert parse_budget(budget, medium) == expected


def test_percent_budget_is_the_inverse_of_trainable_pct(medium):
    rp = resolve("seed-ffn", medium, rank=16)
    exact = f"{rp.trainable_pct:.6f}%"
    assert abs(parse_budget(exact, medium) - rp.trainable_params) <= 4


@pytest.mark.parametrize("bad", ["abc", "0%", "100%", "1.5", "0", -5, "2X", True])
def test_parse_budget_rejects(medium, bad):
    with pytest.raises(UserError):
        parse_budget(bad, medium)


# The seed's three placements at the seed-ffn budget on GPT-2 medium.
@pytest.mark.parametrize(
    "placement, per_role, rank, role_rank, achieved",
    [
        ("seed-ffn", False, 16, {}, 1_966_080),
        ("seed-full", False, 5, {}, 1_966_080),  # 393,216 per rank: 5 fits exactly
        ("seed-attention", False, 7, {}, 1_892_352),  # 270,336 per rank
        ("seed-attention", True, 7, {"attn.o": 8}, 1_941_504),  # + 49,152 for attn.o
        ("attention", False, 13, {}, 1_916_928),  # 147,456 per rank
        ("attention", True, 13, {"attn.o": 14}, 1_966_080),
    ],
)
def test_seed_placements_at_the_seed_ffn_budget(
    medium, placement, per_role, rank, role_rank, achieved
):
    m = match_budget(placement, medium, SEED_FFN_BUDGET, per_role=per_role)
    assert (m.spec.rank, m.spec.role_rank, m.achieved) == (rank, role_rank, achieved)
    assert m.deviation == achieved - SEED_FFN_BUDGET <= 0
    assert m.resolved.trainable_params == achieved
    assert m.to_json()["deviation_pct"] == pytest.approx(100 * m.deviation / SEED_FFN_BUDGET)


@pytest.mark.parametrize("placement", ["seed-full", "seed-attention", "seed-ffn", "mlp", "qkv"])
@pytest.mark.parametrize("budget", [500_000, 1_234_567, "0.55%", "1.2%", "3M"])
def test_matching_never_exceeds_and_lands_within_one_rank_step(medium, placement, budget):
    n = parse_budget(budget, medium)
    m = match_budget(placement, medium, budget)
    spec, rp = m.spec, m.resolved
    assert rp.trainable_params <= n
    assert resolve(placement, medium, rank=spec.rank + 1).trainable_params > n
    # per role: every role's next rank step would overshoot
    m = match_budget(placement, medium, budget, per_role=True)
    spec, rp = m.spec, m.resolved
    left = n - rp.trainable_params
    assert 0 <= left
    for role in rp.by_role():
        step = sum(m.in_features + m.out_features for m in rp.modules if m.role == role)
        assert step > left, f"{role} could take one more rank step"
    assert max(m.rank for m in rp.modules) - min(m.rank for m in rp.modules) <= 1


@pytest.mark.parametrize("placement", ["all-linear", "attention", "mlp", "qv"])
def test_matching_on_llama(tiny_llama, placement):
    m = match_budget(placement, tiny_llama, 3000)
    spec, rp = m.spec, m.resolved
    assert rp.trainable_params <= 3000
    assert resolve(placement, tiny_llama, rank=spec.rank + 1).trainable_params > 3000


def test_matching_errors(medium):
    with pytest.raises(UserError, match="below placement 'seed-full' at rank 1"):
        match_budget("seed-full", medium, 100_000)
    with pytest.raises(UserError, match="sets its own per-role"):
        match_budget({"roles": ["attn"], "role_rank": {"attn.o": 4}}, medium, "1M")


def test_matching_caps_the_rank_at_the_module_size(tiny_llama):
    # a huge budget cannot push the rank past min(in, out) of the smallest module
    assert match_budget("attention", tiny_llama, "1G").spec.rank == 16  # k/v project 32 -> 16 (GQA)


# ---------------------------------------------------------------- per-module ranks
def _tiny_gpt2():
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(FAMILIES["gpt2"]())


def test_module_rank_resolves_and_matches_peft():
    model = _tiny_gpt2()
    spec = parse_placement(
        {
            "roles": ["attn", "mlp"],
            "rank": 4,
            "role_rank": {"mlp.up": 2},
            "module_rank": {"transformer.h.1.mlp.c_fc": 8, "transformer.h.0.attn.c_attn": 1},
        }
    )
    rp = resolve(spec, model)
    ranks = {m.name: m.rank for m in rp.modules}
    assert ranks["transformer.h.1.mlp.c_fc"] == 8 and ranks["transformer.h.0.mlp.c_fc"] == 2
    assert ranks["transformer.h.0.attn.c_attn"] == 1 and ranks["transformer.h.1.attn.c_attn"] == 4
    # (32+96)*(1+4) + (32+32)*4*2 + (32+128)*(2+8) + (128+32)*4*2
    assert rp.trainable_params == 640 + 512 + 1600 + 1280
    peft_model = get_peft_model(model, lora_config(rp.modules))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == rp.trainable_params
    # a --rank override wins over every per-module rank, as it does over role_rank
    assert {m.rank for m in resolve(spec, _tiny_gpt2(), rank=2).modules} == {2}


def test_module_rank_naming_an_unadapted_module_warns(medium):
    rp = resolve({"roles": ["attn"], "module_rank": {"transformer.h.0.mlp.c_fc": 4}}, medium)
    assert any("module_rank names 1 module" in w for w in rp.warnings)


# ---------------------------------------------------------------- allocation
def _scores(arch, hot_role: str, hot: float = 10.0) -> dict:
    """Synthetic scores: one role hot, the rest cooler, later layers a little hotter."""
    out = {}
    for m in arch.modules:
        if m.layer is not None:
            out[(m.layer, m.role)] = (hot if m.role == hot_role else 1.0) * (1 + 0.1 * m.layer)
    return out


@pytest.mark.parametrize("budget", [5_000, 200_000, "0.55%", "seed-ffn@r16", "seed-full@r16"])
@pytest.mark.parametrize("per_param", [True, False])
def test_allocation_respects_the_budget_exactly(medium, budget, per_param):
    n = parse_budget(budget, medium)
    scores = _scores(medium, "attn.o")
    a = allocate(scores, medium, budget, score_per_param=per_param)
    assert a.achieved <= n
    # the resolved spec counts exactly what the allocation chose
    expected = sum(
        r * sum(m.in_features + m.out_features for m in medium.modules if (m.layer, m.role) == k)
        for k, r in a.ranks.items()
    )
    assert a.achieved == expected
    # nothing more fits: no absent key at rank 2, no chosen key one rung up
    left = n - a.achieved
    ladder = [2, 4, 8, 16]
    for k in scores:
        cost1 = sum(
            m.in_features + m.out_features for m in medium.modules if (m.layer, m.role) == k
        )
        r = a.ranks.get(k, 0)
        if r == 16:
            continue
        nxt = ladder[ladder.index(r) + 1] if r else 2
        assert cost1 * (nxt - r) > left


def test_allocation_follows_the_scores(medium):
    a = allocate(_scores(medium, "attn.o", hot=100.0), medium, "seed-ffn@r16")
    # the hot role is taken in every layer, at the top of the ladder, before anything else
    assert all(a.ranks.get((layer, "attn.o")) == 16 for layer in range(24))
    assert {k[1] for k, r in a.ranks.items() if r == 16} == {"attn.o"}
    # the cool roles share what is left, later (hotter) layers first
    assert a.ranks[(0, "attn.qkv")] == 2 and a.ranks[(23, "attn.qkv")] == 8
    assert a.achieved == 1_961_984
    spec = a.spec
    assert spec.rank == 4 and spec.module_rank["transformer.h.0.attn.c_proj"] == 16
    # a plain spec: it round-trips through dict/YAML form and resolves the same
    again = resolve(parse_placement(spec.model_dump(exclude_defaults=True)), medium)
    assert again.trainable_params == a.achieved
    assert [m.rank for m in again.modules] == [m.rank for m in a.resolved.modules]


def test_allocated_spec_trains_plans_and_exports():
    model = _tiny_gpt2()
    arch = describe(model)
    scores = _scores(arch, "mlp.up")
    budget = resolve("seed-ffn", arch, rank=8).trainable_params  # 2 x 160 x 8 = 2560
    spec = allocate(scores, arch, budget, name="probe-alloc").spec
    rp = resolve(spec, model)
    assert rp.name == "probe-alloc" and rp.trainable_params <= budget == 2560
    peft_model = get_peft_model(model, lora_config(rp.modules))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == rp.trainable_params
    files = export_placement(rp, "peft", base_model="tiny")
    assert "adapter_config.json" in files


def test_allocation_skips_zero_scores_and_explains_errors(medium):
    scores = {(0, "attn.o"): 1.0, (1, "attn.o"): 0.0}
    a = allocate(scores, medium, "1M")
    assert a.ranks == {(0, "attn.o"): 16} and a.skipped == [(1, "attn.o")]
    with pytest.raises(UserError, match="fits no module"):
        allocate(scores, medium, 100)
    with pytest.raises(UserError, match="names no module"):
        allocate({(99, "attn.o"): 1.0}, medium, "1M")
    with pytest.raises(UserError, match="finite scores"):
        allocate({(0, "attn.o"): float("inf")}, medium, "1M")
    with pytest.raises(UserError, match="rank ladder"):
        allocate(scores, medium, "1M", ranks=(0, 4))


@pytest.mark.parametrize(
    "placement, per_role, rank, role_rank, magnitudes, achieved",
    [
        # c_fc only: 24 x (1024 + 4096) = 122,880 per rank; DoRA's 24 x 4096 = 98,304
        # magnitudes first: (1,966,080 - 98,304) // 122,880 = 15
        ("seed-ffn", False, 15, {}, 98_304, 15 * 122_880 + 98_304),
        # 393,216 per rank; magnitudes 24 x (3072 + 1024 + 4096 + 1024) = 221,184: r = 4,
        ("seed-full", False, 4, {}, 221_184, 4 * 393_216 + 221_184),
        # then the 172,032 left: mlp.down (122,880), then attn.o (49,152): exactly spent
        ("seed-full", True, 4, {"mlp.down": 5, "attn.o": 5}, 221_184, 1_966_080),
    ],
)
def test_dora_magnitudes_are_spent_from_the_budget(
    medium, placement, per_role, rank, role_rank, magnitudes, achieved
):
    m = match_budget(placement, medium, SEED_FFN_BUDGET, per_role=per_role, use_dora=True)
    assert (m.spec.rank, m.spec.role_rank, m.achieved) == (rank, role_rank, achieved)
    assert m.resolved.use_dora and m.achieved <= SEED_FFN_BUDGET
    assert m.achieved - resolve(m.spec, medium).trainable_params == magnitudes
