"""Grids and tasks in a study: labels, settings, run ids that stay put, and errors."""

from __future__ import annotations

import pytest

from loraplace.errors import UserError
from loraplace.study import expand, validate_study

BASE = {
    "name": "g",
    "placements": ["seed-full", "seed-ffn"],
    "rank": [4, 8],
    "seeds": [0, 1],
    "train": {"steps": 10, "lr": 1e-3},
}
FPS = {"model": "m", "data": "d"}
# Run ids and study id of BASE as they were before grids, tasks and variants existed.
OLD_IDS = {
    "seed-full@r4/0": "048af866beec6f66",
    "seed-full@r4/1": "f7a4f127229f20f8",
    "seed-full@r8/0": "99ae1b139bf438a3",
    "seed-full@r8/1": "f926ea761a77bcfc",
    "seed-ffn@r4/0": "32b047dbdf130c52",
    "seed-ffn@r4/1": "439f42b332f7742e",
    "seed-ffn@r8/0": "db3d6139ba47af49",
    "seed-ffn@r8/1": "273d21cc1188eab4",
}


def _lora(cfg, **kw):
    specs, _ = expand(validate_study(cfg), target="tiny-markov", **kw)
    return [s for s in specs if s.kind == "lora"]


def test_studies_without_the_new_keys_keep_their_run_and_study_ids():
    study = validate_study(BASE)
    assert study.study_id == "6901908a147d"
    got = {f"{s.placement_name}/{s.seed}": s.run_id for s in _lora(BASE, fingerprints=FPS)}
    assert got == OLD_IDS


def test_lr_and_rank_lists_cross_placements_grid_points_and_seeds():
    cfg = {**BASE, "train": {"steps": 10, "lr": [1e-3, 1e-2]}}
    specs = _lora(cfg, fingerprints=FPS)
    assert len(specs) == 2 * 2 * 2 * 2
    labels = list(dict.fromkeys(s.placement_name for s in specs))
    assert labels[:4] == [
        "seed-full@lr0.001,r4",
        "seed-full@lr0.001,r8",
        "seed-full@lr0.01,r4",
        "seed-full@lr0.01,r8",
    ]
    s = next(s for s in specs if s.placement_name == "seed-ffn@lr0.01,r8")
    assert s.train.lr == 1e-2 and {m["rank"] for m in s.modules} == {8}
    assert s.setting == {"lr": 1e-2, "rank": 8} and s.placement_base == "seed-ffn"
    # The lr-1e-3 points are the runs of the study without a grid: the same ids.
    same = {f"{x.placement_name.replace('lr0.001,', '')}/{x.seed}": x.run_id for x in specs}
    assert {k: same[k] for k in OLD_IDS} == OLD_IDS


def test_alpha_and_variant_axes():
    cfg = {**BASE, "rank": 4, "alpha": [8, 16], "use_dora": [False, True]}
    specs = _lora(cfg, fingerprints=FPS)
    labels = list(dict.fromkeys(s.placement_name for s in specs))
    assert labels[:4] == [
        "seed-full@a8,lora",
        "seed-full@a8,dora",
        "seed-full@a16,lora",
        "seed-full@a16,dora",
    ]
    dora = next(s for s in specs if s.placement_name == "seed-full@a16,dora")
    assert dora.use_dora and {m["alpha"] for m in dora.modules} == {16.0}
    plain = next(s for s in specs if s.placement_name == "seed-full@a16,lora")
    assert plain.run_id != dora.run_id
    init = _lora({**BASE, "rank": 4, "init_lora_weights": ["gaussian", "pissa"]})
    assert {s.placement_name for s in init} >= {"seed-ffn@init-gaussian", "seed-ffn@init-pissa"}
    with pytest.raises(UserError, match="olora' with use_dora fails in PEFT on Conv1D"):
        _lora({**BASE, "use_dora": True, "init_lora_weights": "olora"})


def test_datasets_cross_tasks_with_their_own_fingerprints():
    cfg = {
        **BASE,
        "rank": 4,
        "datasets": ["markov-copy", {"name": "tr", "dataset": "markov-transition"}],
    }
    specs, _ = expand(
        validate_study(cfg),
        target="tiny-markov",
        fingerprints={"model": "m"},
        task_fingerprints={"markov-copy": {"data": "c"}, "markov-transition": {"data": "t"}},
    )
    assert [(s.task, s.kind) for s in specs if s.seed == 0] == [
        ("markov-copy", "zero-shot"),
        ("markov-copy", "lora"),
        ("markov-copy", "lora"),
        ("tr", "zero-shot"),
        ("tr", "lora"),
        ("tr", "lora"),
    ]
    tr = [s for s in specs if s.task == "tr"]
    assert {s.dataset for s in tr} == {"markov-transition"}
    assert {s.fingerprints["data"] for s in tr} == {"t"}
    assert {s.retain_dataset for s in tr} == {"markov-source"}
    # The same placement on two tasks: one label, two runs.
    assert len({s.run_id for s in specs}) == len(specs)


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"dataset": "markov-copy", "datasets": ["markov-copy"]}, "both dataset and datasets"),
        ({"datasets": []}, "datasets is empty"),
        ({"datasets": ["markov-copy", "markov-copy"]}, "'markov-copy' appears twice"),
        ({"select": {"by": "test_loss"}}, "selection reads validation metrics only"),
        ({"analysis": {"margin": 0}}, "analysis.margin"),
    ],
)
def test_errors(cfg, message):
    with pytest.raises(UserError, match=message):
        validate_study({**BASE, **cfg})


def test_select_holds_out_a_test_split_unless_told():
    assert validate_study({**BASE, "select": {}}).train_settings().test_fraction == 0.1
    told = {**BASE, "select": {}, "train": {"test_fraction": 0.2}}
    assert validate_study(told).train_settings().test_fraction == 0.2
    assert validate_study(BASE).train_settings().test_fraction == 0.0
    specs = _lora({**BASE, "select": {"by": "eval_loss"}}, fingerprints=FPS)
    assert {s.train.test_fraction for s in specs} == {0.1}
    assert not {s.run_id for s in specs} & set(OLD_IDS.values())


def test_dora_on_fused_experts_is_refused_before_any_run():
    from pathlib import Path

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(Path(__file__).parent / "configs" / "qwen3_moe")
    study = validate_study({**BASE, "rank": 4, "placements": ["all"], "use_dora": True})
    with pytest.raises(UserError, match="PEFT's DoRA does not support"):
        expand(study, target=config)
    linear = validate_study({**BASE, "rank": 4, "placements": ["all-linear"], "use_dora": True})
    specs, _ = expand(linear, target=config)
    assert {s.use_dora for s in specs if s.kind == "lora"} == {True}


def test_dora_with_lora_bias_is_refused_before_any_run():
    cfg = {**BASE, "use_dora": [False, True], "train": {"steps": 10, "lora_bias": True}}
    with pytest.raises(UserError, match="lora_bias cannot be used with DoRA"):
        _lora(cfg)
    assert len(_lora({**cfg, "use_dora": False})) == 8  # lora_bias alone expands
