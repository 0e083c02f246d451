"""The report of a multi-task grid study with selection and a margin, checked cell by cell."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from report_fixtures import manifest

from loraplace.analysis import read_study_data
from loraplace.analysis.fair import compare, seed_plans, seed_warning
from loraplace.report.build import build_report
from loraplace.runs import RunResult, RunSpec, TrainSettings
from loraplace.store import Store

LRS = (1e-3, 1e-2, 1e-1)
SEEDS = (0, 1, 2)
# Planted validation loss at each placement's best lr; copy and transition disagree.
BASE = {
    ("copy", "attn"): 2.500,
    ("copy", "full"): 2.503,
    ("copy", "ffn"): 2.700,
    ("transition", "attn"): 2.600,
    ("transition", "full"): 2.450,
    ("transition", "ffn"): 2.400,
}
BEST_LR = {"attn": 1e-2, "full": 1e-2, "ffn": 1e-1}
MODS = {
    "attn": [("attn.c_attn", 128, 384)],
    "ffn": [("mlp.c_fc", 128, 512)],
    "full": [("attn.c_attn", 128, 384), ("mlp.c_fc", 128, 512)],
}


def val_loss(task: str, p: str, lr: float) -> float:
    """Loss rises 0.15 nats per decade away from the placement's best lr."""
    return BASE[task, p] + 0.15 * abs(np.log10(lr / BEST_LR[p]))


def _spec(task, p, lr, seed, kind="lora"):
    mods = tuple(
        {
            "name": f"h.0.{n}",
            "role": n,
            "layer": 0,
            "in_features": i,
            "out_features": o,
            "rank": 8,
            "alpha": 16.0,
        }
        for n, i, o in MODS.get(p, [])
    )
    label = "zero-shot" if kind == "zero-shot" else f"{p}@lr{lr:g}"
    return RunSpec(
        study="fair",
        placement_name=label,
        kind=kind,
        model="m",
        dataset=f"markov-{task}",
        seed=seed,
        train=TrainSettings(steps=10, lr=lr, test_fraction=0.1),
        modules=mods,
        task=task,
        placement_base=None if kind == "zero-shot" else p,
        setting={} if kind == "zero-shot" else {"lr": lr},
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("fair")
    rng = np.random.default_rng(0)
    store = Store(root / "loraplace.db")
    specs = []
    for task in ("copy", "transition"):
        specs.append(_spec(task, "zero-shot", 2e-3, 0, "zero-shot"))
        specs += [
            _spec(task, p, lr, s) for p in ("attn", "ffn", "full") for lr in LRS for s in SEEDS
        ]
    config = {"name": "fair", "select": {"by": "eval_loss"}, "analysis": {"margin": 0.02}}
    store.add_study("fairstudy", "fair", config, "loraplace run fair.yaml")
    store.add_runs("fairstudy", specs)
    shift = {s: rng.normal(0, 0.02) for s in SEEDS}  # shared by every run of a seed
    for spec in specs:
        if spec.kind == "zero-shot":
            m = {"eval_loss": 3.5, "test_loss": 3.51}
        else:
            v = val_loss(spec.task, spec.placement_base, spec.train.lr) + shift[spec.seed]
            v += rng.normal(0, 0.001)
            m = {
                "eval_loss": v,
                "test_loss": v + 0.01 + rng.normal(0, 0.001),
                "zero_shot_loss": 3.5,
                "test_zero_shot_loss": 3.51,
                "trainable_params": float(
                    sum(8 * (i + o) for _, i, o in MODS[spec.placement_base])
                ),
                "total_params": 1e6,
                "trainable_pct": 1.0,
                "train_time_s": 10.0,
            }
        store.save_result(RunResult(spec.run_id, "done", m, {}, manifest(spec.seed)))
    store.close()
    out = build_report(root, root / "report").out
    return out, (out / "report.md").read_text()


def test_selected_settings_and_test_numbers(report):
    out, md = report
    sel = pd.read_csv(out / "tables" / "selection.csv")
    chosen = {(r.task, r.placement): r.setting_lr for r in sel.itertuples()}
    assert chosen == {(t, p): BEST_LR[p] for t in ("copy", "transition") for p in BEST_LR}
    # Headline (Results) numbers are the chosen runs' test losses.
    res = pd.read_csv(out / "tables" / "results.csv").set_index("placement")
    assert set(res.index) == {"attn", "ffn", "full", "zero-shot"}
    heads = sel.set_index(["task", "placement"])["headline_loss_mean"]
    assert res.loc["attn", "eval_loss_mean"] == pytest.approx(heads["copy", "attn"])
    assert heads["copy", "attn"] == pytest.approx(
        sel.set_index(["task", "placement"])["val_mean"]["copy", "attn"] + 0.01, abs=0.003
    )
    assert (out / "figures" / "loss_vs_lr.png").is_file()
    assert "which selection never reads" in md
    # ffn's best lr (0.1) is the grid's highest on both tasks: the report says so.
    assert "2 of 6 selections sit at the edge of the lr grid (copy/ffn: highest" in md


def test_task_table_kendall_and_task_dependence(report):
    out, md = report
    tasks = pd.read_csv(out / "tables" / "tasks.csv").set_index("placement")
    assert tasks["copy_rank"].to_dict() == {"attn": 1.0, "ffn": 3.0, "full": 2.0}
    assert tasks["transition_rank"].to_dict() == {"attn": 3.0, "ffn": 1.0, "full": 2.0}
    assert "The best placement depends on the task: attn on copy; ffn on transition." in md
    # W for ranks (1, 3, 2) and (3, 1, 2): rank sums 4, 4, 4 -> S = 0 -> W = 0.
    assert "Kendall's W = 0.000" in md


def test_verdict_words_and_seed_planning(report):
    out, md = report
    v = pd.read_csv(out / "tables" / "verdicts.csv")
    words = {(r.task, r.a, r.b): r.verdict for r in v.itertuples()}
    assert words["copy", "attn", "ffn"] == "attn better"
    assert words["copy", "attn", "full"] == "equivalent within ±0.02"
    assert words["transition", "ffn", "full"] == "ffn better"
    row = v[(v.task == "copy") & (v.a == "attn") & (v.b == "full")].iloc[0]
    assert row.p_tost_holm < 0.05
    assert "Pairwise verdicts (margin ±0.02 nats):" in md
    plan = pd.read_csv(out / "tables" / "seed_plan.csv")
    assert len(plan) == 6 and plan.for_difference.notna().any()
    assert "Seed planning (80 % power" in md


def test_seed_warning_names_the_pair_that_needs_more_seeds(report):
    out, _ = report
    fair = compare(read_study_data(out.parent))
    assert seed_warning(fair) is None  # every pair is resolved with 3 seeds
    # A margin the attn - full difference sits just inside needs more seeds than 3.
    fair.margin = 0.0075
    for t in fair.tasks:
        t.seed_plans = seed_plans(t.summary, fair.margin)
    line = seed_warning(fair)
    assert line is not None and line.startswith("3 seeds are too few to resolve the ±0.0075")
    assert "attn vs full on copy" in line and "add seeds" in line
