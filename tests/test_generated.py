"""Placements a study generates at its budget (allocate / random), the stored probe, and
the report sections that validate them."""

from __future__ import annotations

import pytest
from run_fixtures import tiny_study, write_tiny_model
from transformers import GPT2Config

from loraplace.arch import describe, meta_from_config
from loraplace.budget.generated import parse_generated, random_allocation
from loraplace.errors import UserError
from loraplace.placement import resolve
from loraplace.study import expand, validate_study

SMALL = GPT2Config(n_embd=128, n_layer=4, n_head=4, vocab_size=71, n_positions=128)


@pytest.fixture(scope="module")
def arch():
    return describe(meta_from_config(SMALL), SMALL)


def _cost1(arch):
    out = {}
    for m in arch.modules:
        if m.layer is not None and m.role != "lm_head":
            out[(m.layer, m.role)] = out.get((m.layer, m.role), 0) + m.in_features + m.out_features
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_random_placement_is_seeded_within_budget_and_fills_it(arch, seed):
    budget = 4528
    a = resolve(random_allocation(arch, budget, seed=seed), arch)
    b = resolve(random_allocation(arch, budget, seed=seed), arch)
    assert [(m.name, m.rank) for m in a.modules] == [(m.name, m.rank) for m in b.modules]
    assert a.trainable_params <= budget
    # Every (layer, role) left out did not fit even at rank 1 in what was left.
    chosen = {(m.layer, m.role) for m in a.modules}
    left = budget - a.trainable_params
    assert all(c > left for k, c in _cost1(arch).items() if k not in chosen)


def test_random_placements_differ_between_seeds(arch):
    def pick(seed):
        rp = resolve(random_allocation(arch, 4528, seed=seed), arch)
        return tuple((m.name, m.rank) for m in rp.modules)

    picks = {pick(s) for s in range(5)}
    assert len(picks) == 5


def _study(**kw):
    base = {
        "model": "gpt2",
        "placements": ["seed-ffn", {"name": "alloc", "allocate": "taylor"}],
        "seeds": [0, 1],
        "zero_shot": False,
        "retain": None,
        "budget": 4528,
    }
    base.update(kw)
    return validate_study(base)


def test_expand_allocates_from_the_scores_and_draws_random_placements(arch):
    study = _study(
        placements=[
            "seed-ffn",
            {"name": "alloc", "allocate": "taylor", "ranks": [1, 2]},
            {"name": "rnd", "random": 3, "seed": 7},
        ]
    )
    # A score that wants attn.o of layer 3 most, then mlp.up of layer 0.
    scores = {k: 0.001 for k in _cost1(arch)}
    scores[(3, "attn.o")] = 10.0
    scores[(0, "mlp.up")] = 5.0
    specs, warnings = expand(study, target=arch, scores=lambda name: scores)
    names = [s.placement_name for s in specs]
    rnd = [f"rnd-{i}" for i in range(3) for _ in (0, 1)]
    assert names == ["seed-ffn"] * 2 + ["alloc"] * 2 + rnd
    alloc = {(m["layer"], m["role"]): m["rank"] for m in specs[2].modules}
    assert alloc[(3, "attn.o")] == 2 and alloc[(0, "mlp.up")] == 2
    for s in specs:
        assert sum(m["rank"] * (m["in_features"] + m["out_features"]) for m in s.modules) <= 4528
    assert any(w.startswith("alloc: budget 4,528 -> ") and "generated" in w for w in warnings)
    # The same study expands to the same runs (a re-run resumes, it does not start over).
    again, _ = expand(study, target=arch, scores=lambda name: scores)
    assert [s.run_id for s in again] == [s.run_id for s in specs]


def test_allocate_without_probe_scores_is_a_user_error(arch):
    with pytest.raises(UserError, match="allocated from probe scores"):
        expand(_study(), target=arch)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"allocate": "taylor", "random": 2}, "both allocate and random"),
        ({"allocate": "magic"}, "unknown probe score 'magic'"),
        ({"random": 0}, "at least 1"),
        ({"random": 2, "ranks": []}, "positive ranks"),
        ({"allocate": "taylor", "rank": 3}, "rank"),
    ],
)
def test_bad_generated_entries(entry, message):
    with pytest.raises(UserError, match=message):
        parse_generated(entry)


def test_generated_placement_needs_a_budget():
    with pytest.raises(UserError, match="has none: add budget"):
        _study(budget=None)


@pytest.mark.slow
def test_budgeted_study_stores_probe_and_budget_and_reports_them(tmp_path):
    """End to end on a tiny model: probe at plan time, allocation, random fill, report."""
    from loraplace.analysis import read_study_data, summarize
    from loraplace.analysis.budgeted import budget_check
    from loraplace.analysis.probe_check import probe_check
    from loraplace.driver import run_study
    from loraplace.report.build import build_report
    from loraplace.store import Store
    from loraplace.study import validate_study as vs

    write_tiny_model(tmp_path / "tiny-gpt2", n_layer=2, n_embd=32)
    # 2 layers, d=32: attn.qkv 128, attn.o 64, mlp.up 160, mlp.down 160 params per rank.
    config = tiny_study(
        tmp_path,
        placements=[
            "attn.qkv",
            "attn.o",
            "mlp.up",
            "mlp.down",
            {"name": "alloc", "allocate": "taylor", "ranks": [1, 2, 4]},
            {"name": "rnd", "random": 2},
        ],
        budget=512,
        probe={"batches": 2, "batch_size": 4, "seed": 0},
        zero_shot=True,
    )
    config["train"]["steps"] = 4
    study = vs(config)
    outcome = run_study(study)
    assert outcome.statuses == {"done": 1 + 7 * 2}  # zero-shot once per study, 7 x 2 seeds
    with Store(tmp_path / "out", create=False, writer=False) as store:
        sid = store.study()["study_id"]
        stored = store.probe(sid)
        assert store.get_meta(f"budget:{sid}") == "512"
    assert stored["meta"]["batches"] == 2 and stored["meta"]["tokens"] == 2 * 4 * 16
    assert set(stored["scores"]) == {"taylor", "lora_grad", "nfn", "out_norm"}

    s = summarize(read_study_data(tmp_path / "out"))
    bc = budget_check(s)
    assert bc is not None and bc.budget == 512
    origin = {r.placement: r.origin for r in bc.rows}
    assert origin["alloc"] == "allocated:taylor" and origin["rnd-1"] == "random"
    assert origin["attn.o"] == "preset or spec"
    assert all(r.params <= 512 for r in bc.rows)
    (check,) = bc.checks
    assert {t.b for t in check.vs_others} == {"attn.qkv", "attn.o", "mlp.up", "mlp.down"}
    assert check.random_mean.n == 2
    rnd = [s.get("rnd-0").loss.mean, s.get("rnd-1").loss.mean]
    assert check.random_mean.mean == pytest.approx(sum(rnd) / 2)
    assert check.vs_random.n == 2

    pc = probe_check(s)
    assert pc is not None and pc.n_trained == 4
    assert {r.role: r.placement for r in pc.roles} == {
        "attn.qkv": "attn.qkv",
        "attn.o": "attn.o",
        "mlp.up": "mlp.up",
        "mlp.down": "mlp.down",
    }
    gains = {r.role: r.trained_gain.mean for r in pc.roles}
    assert gains["attn.o"] == pytest.approx(s.zero_shot.loss.mean - s.get("attn.o").loss.mean)
    assert set(pc.rho) == {"taylor", "lora_grad", "nfn", "out_norm"}
    assert all(v is None or -1.0 <= v <= 1.0 for v in pc.rho.values())

    out = build_report(tmp_path / "out", tmp_path / "report").out
    text = (out / "report.md").read_text()
    assert "## Equal budget" in text and "## Probes before training" in text
    assert "Spearman rank correlation with the trained gains over 4 roles" in text
    assert (out / "tables" / "budget.csv").is_file() and (out / "tables" / "probe.csv").is_file()
