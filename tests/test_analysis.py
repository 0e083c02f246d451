"""Analysis from the store: seeds to CIs, paired tests with Holm, fronts, importance, ppl."""

from __future__ import annotations

import math
import sqlite3

import pytest
from report_fixtures import SCRIPT, importance_placements, make_store
from scipy import stats

from loraplace.analysis import (
    consistency,
    efficiency,
    estimate,
    fronts,
    guidelines,
    holm,
    importance,
    paired_tests,
    read_study_data,
    summarize,
)
from loraplace.analysis.pareto import Point, pareto_front
from loraplace.analysis.stats import paired_test
from loraplace.errors import UserError


@pytest.fixture(scope="module")
def seed_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("seed") / "loraplace.db")


@pytest.fixture(scope="module")
def summary(seed_store):
    return summarize(read_study_data(seed_store))


def test_estimate_is_mean_and_t_interval():
    e = estimate([3.0, 3.2, 3.4])
    assert e.mean == pytest.approx(3.2)
    # sd = 0.2, sem = 0.2/sqrt(3), t(0.975, 2) = 4.302653
    assert e.ci == pytest.approx(4.302653 * 0.2 / math.sqrt(3), rel=1e-6)
    assert estimate([3.0]).ci is None
    assert estimate([None, float("nan")]) is None


@pytest.mark.parametrize(
    "ps, want",
    [
        ([0.01, 0.04, 0.03], [0.03, 0.06, 0.06]),
        ([0.2, 0.01], [0.2, 0.02]),
        ([0.5, None, 0.5], [1.0, None, 1.0]),
        ([0.9], [0.9]),
    ],
)
def test_holm(ps, want):
    got = holm(ps)
    assert [g if g is None else round(g, 10) for g in got] == want


@pytest.mark.parametrize(
    "pts, front",
    [
        ([("a", 1, 3.0), ("b", 2, 2.0), ("c", 3, 2.5)], ["a", "b"]),
        ([("a", 1, 3.0), ("b", 1, 2.0)], ["b"]),
        ([("a", 5, 1.0), ("b", 1, 2.0), ("c", 3, 1.5)], ["b", "c", "a"]),
    ],
)
def test_pareto_front(pts, front):
    got = pareto_front([Point(n, x, y) for n, x, y in pts])
    assert [p.placement for p in got] == front


def test_paired_test_matches_scipy_and_flags_untestable():
    a = {0: 3.0, 1: 3.1, 2: 3.05}
    b = {0: 3.2, 1: 3.25, 2: 3.3, 3: 9.9}  # seed 3 is not shared
    t = paired_test("a", a, "b", b)
    ref = stats.ttest_rel([3.0, 3.1, 3.05], [3.2, 3.25, 3.3])
    assert t.seeds == (0, 1, 2)
    assert t.p == pytest.approx(ref.pvalue)
    assert t.diff.mean == pytest.approx(-0.2)
    assert paired_test("a", {0: 1.0}, "b", {0: 2.0}).verdict.startswith("untestable")


def test_summary_of_seed_study(summary):
    names = [p.placement for p in summary.placements]
    assert names == ["c_attn+c_proj+c_fc", "c_attn+c_proj", "c_fc", SCRIPT]
    assert summary.reference == "c_attn+c_proj+c_fc"  # the most trainable params
    full = summary.get("c_attn+c_proj+c_fc")
    assert full.trainable_params == 65536
    assert full.rel_loss_vs_ref == 0.0 and full.speedup_vs_ref == 1.0
    script = summary.get(SCRIPT)
    assert script.seeds == (0, 2)  # seed 1 diverged
    assert [(r.placement, r.seed, r.status, r.diverged_step) for r in summary.excluded] == [
        (SCRIPT, 1, "diverged", 37)
    ]
    assert all(v < 5 for p in summary.placements for v in p.loss.values)  # never the 99.0
    assert summary.zero_shot.loss.mean == pytest.approx(4.1)
    assert summary.zero_shot.source == "zero-shot runs"
    assert summary.floor == pytest.approx(2.95)
    assert any("fewer than 3" in w and SCRIPT in w for w in summary.warnings)
    # gap closed per run = (4.1 - loss) / (4.1 - 2.95)
    want = [(4.1 - v) / 1.15 for v in full.loss.values]
    assert full.gap_closed.mean == pytest.approx(sum(want) / 3)
    assert summary.has_forgetting and full.forgetting.mean > script.forgetting.mean > 0


def test_summary_matches_sqlite(seed_store, summary):
    con = sqlite3.connect(seed_store)
    rows = con.execute(
        "SELECT m.value FROM runs r JOIN metrics m ON r.run_id = m.run_id "
        "WHERE r.placement = 'c_fc' AND r.status = 'done' AND m.name = 'eval_loss' "
        "ORDER BY r.seed"
    ).fetchall()
    assert summary.get("c_fc").loss.values == tuple(v for (v,) in rows)


def test_reference_override_and_unknown_reference(seed_store):
    s = summarize(read_study_data(seed_store), reference="c_fc")
    assert s.reference == "c_fc"
    assert s.get("c_fc").speedup_vs_ref == 1.0
    assert s.get("c_attn+c_proj+c_fc").rel_loss_vs_ref < 0
    with pytest.raises(UserError, match='did you mean "c_fc"'):
        summarize(read_study_data(seed_store), reference="c_fcc")


def test_tests_fronts_efficiency(summary):
    tests = paired_tests(summary)
    assert len(tests) == 6
    by_pair = {(t.a, t.b): t for t in tests}
    t = by_pair[("c_attn+c_proj+c_fc", SCRIPT)]
    assert t.seeds == (0, 2) and t.n == 2
    adjusted = holm([x.p for x in tests])
    assert [x.p_holm for x in tests] == adjusted
    fr = fronts(summary)
    assert set(fr) == {"params", "time", "forgetting"}
    assert [p.placement for p in fr["params"].front] == [
        SCRIPT,
        "c_fc",
        "c_attn+c_proj",
        "c_attn+c_proj+c_fc",
    ]
    eff = {e.placement: e for e in efficiency(summary)}
    fc = summary.get("c_fc")
    assert eff["c_fc"].per_mparam == pytest.approx(fc.loss_reduction.mean / 0.02048)
    assert eff["c_fc"].per_second == pytest.approx(fc.loss_reduction.mean / fc.train_time.mean)
    gl = guidelines(summary, tests)
    assert [(g.axis, g.placement) for g in gl][:2] == [("params", SCRIPT), ("params", "c_fc")]
    assert gl[0].step_test is None and gl[1].step_test is not None


def test_importance_recovers_planted_order(tmp_path):
    db = make_store(
        tmp_path / "imp.db", importance_placements(), seeds=(0, 1), diverged=None, forgetting=False
    )
    imp = importance(summarize(read_study_data(db)))
    # planted role gains: mlp.up 0.34 > mlp.down 0.22 > attn.qkv 0.16 > attn.o 0.06
    assert [r.unit for r in imp.roles] == ["mlp.up", "mlp.down", "attn.qkv", "attn.o"]
    assert [r.rank_gain for r in imp.roles] == [1, 2, 3, 4]
    up = imp.roles[0]
    assert {(c.with_, c.without) for c in up.comparisons} == {
        ("only-mlp.up", "zero-shot"),
        ("all", "no-mlp.up"),
    }
    # later layers carry more weight in the planted model
    assert [r.unit for r in imp.layers] == ["layers 2-3", "layers 0-1"]
    assert {(c.with_, c.without) for c in imp.layers[0].comparisons} == {
        ("layers 2-3", "zero-shot"),
        ("all", "layers 0-1"),
    }
    # mlp.down has the same params as mlp.up but less gain: its per-param rank follows
    assert imp.roles[0].rank_per_param == 1
    assert imp.heatmap is not None
    assert imp.heatmap.roles == ["attn.o", "attn.qkv", "mlp.down", "mlp.up"]
    assert imp.heatmap.layers == [0, 1, 2, 3]


def test_no_importance_without_nested_placements(tmp_path):
    db = make_store(
        tmp_path / "flat.db",
        {"a": [("attn.qkv", [0, 1, 2, 3])], "b": [("mlp.up", [0, 1, 2, 3])]},
        seeds=(0,),
        zero_shot=False,
        diverged=None,
    )
    s = summarize(read_study_data(db))
    # zero-shot comes from the runs' zero_shot_loss, so single roles still rank
    assert s.zero_shot.source.startswith("zero_shot_loss")
    assert [r.unit for r in importance(s).roles] == ["mlp.up", "attn.qkv"]
    assert any("fewer than 3" in w for w in s.warnings)
    assert [t.verdict for t in paired_tests(s)] == ["untestable (fewer than 2 shared seeds)"]


def test_consistency_detects_reordering_and_bad_ppl(tmp_path, summary):
    c = consistency(summary)
    assert c.order_by_loss == ["c_attn+c_proj+c_fc", "c_attn+c_proj", "c_fc", SCRIPT]
    assert c.order_by_batch_ppl == ["c_attn+c_proj+c_fc", "c_fc", "c_attn+c_proj", SCRIPT]
    assert c.reordered
    row = c.rows[1]
    assert row.ppl == pytest.approx(math.exp(row.loss))
    assert row.inflation_pct == pytest.approx(6.0, abs=0.01)  # 1.06 x exp(loss) per seed
    assert c.mismatches == []
    db = make_store(tmp_path / "bad.db", seeds=(0,), diverged=None)
    con = sqlite3.connect(db)
    con.execute("UPDATE metrics SET value = value * 1.1 WHERE name = 'eval_ppl'")
    con.commit()
    con.close()
    bad = consistency(summarize(read_study_data(db)))
    assert len(bad.mismatches) == 4


def test_missing_store_and_study_are_user_errors(tmp_path, seed_store):
    with pytest.raises(UserError, match="no results store"):
        read_study_data(tmp_path / "nowhere")
    with pytest.raises(UserError, match="no study 'nope'"):
        read_study_data(seed_store, "nope")
