"""Selection on validation, headline numbers from test, and rankings across grid points."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from run_fixtures import tiny_study, write_text

from loraplace.analysis import read_study_data, summarize
from loraplace.analysis.read import RunRecord, StudyData
from loraplace.analysis.selection import (
    headline_view,
    ranking_at_points,
    ranking_flips,
    select_settings,
)
from loraplace.assets import Assets
from loraplace.driver import run_study
from loraplace.study import validate_study

torch.set_num_threads(1)

LRS = (1e-3, 1e-2, 1e-1)
# Validation loss by (placement, lr): attn is best at 1e-2, ffn at 1e-1, so the
# ranking flips between lr points; test losses favour other points on purpose.
VAL = {("attn", 1e-3): 3.0, ("attn", 1e-2): 2.5, ("attn", 1e-1): 2.9}
VAL |= {("ffn", 1e-3): 3.2, ("ffn", 1e-2): 2.8, ("ffn", 1e-1): 2.6}
TEST = {k: 5.0 - v for k, v in VAL.items()}


def _run(placement, lr, seed, test_shift=0.0, task=None):
    label = f"{placement}@lr{lr:g}"
    noise = 0.01 * seed
    return RunRecord(
        run_id=f"{task}-{label}-{seed}",
        placement=label,
        kind="lora",
        seed=seed,
        status="done",
        diverged_step=None,
        error=None,
        spec={"task": task, "placement_base": placement, "setting": {"lr": lr}},
        metrics={
            "eval_loss": VAL[placement, lr] + noise,
            "test_loss": TEST[placement, lr] + noise + test_shift,
        },
    )


def _study(runs):
    return StudyData(Path("x.db"), "sid", "grid", {}, None, 0.0, runs)


def _grid_runs(test_shift=0.0, task=None):
    return [
        _run(p, lr, s, test_shift, task) for p in ("attn", "ffn") for lr in LRS for s in range(3)
    ]


def test_selection_picks_the_best_validation_mean_per_placement():
    sel = {s.placement: s for s in select_settings(_study(_grid_runs()))}
    assert sel["attn"].chosen.label == "attn@lr0.01"
    assert sel["attn"].chosen.setting == {"lr": 1e-2}
    assert sel["attn"].chosen.score.mean == pytest.approx(2.51)
    assert sel["ffn"].chosen.label == "ffn@lr0.1"
    assert [p.label for p in sel["ffn"].points] == ["ffn@lr0.001", "ffn@lr0.01", "ffn@lr0.1"]
    # Test losses favour lr 1e-3 for both; selecting on them would choose differently.
    assert min(LRS, key=lambda lr: TEST["attn", lr]) != 1e-2


def test_selection_never_reads_test_metrics():
    base = select_settings(_study(_grid_runs()))
    for shift in (-10.0, 7.0):
        other = select_settings(_study(_grid_runs(test_shift=shift)))
        assert [s.chosen.label for s in other] == [s.chosen.label for s in base]
    no_test = [
        dataclasses.replace(r, metrics={"eval_loss": r.metrics["eval_loss"]}) for r in _grid_runs()
    ]
    assert [s.chosen for s in select_settings(_study(no_test))] == [s.chosen for s in base]
    with pytest.raises(ValueError, match="validation metrics only"):
        select_settings(_study(_grid_runs()), by="test_loss")


def test_headline_view_reads_test_numbers_of_the_chosen_runs_only():
    study = _study(_grid_runs())
    view = headline_view(study, select_settings(study), None)
    summary = summarize(view)
    assert [p.placement for p in summary.placements] == ["attn", "ffn"]
    attn = summary.get("attn")
    assert attn.loss.mean == pytest.approx(TEST["attn", 1e-2] + 0.01)
    assert attn.loss.n == 3
    assert [r.metrics["val_loss"] for r in attn.runs] == pytest.approx([2.5, 2.51, 2.52])


def test_ranking_flips_across_lr_points_and_tasks_are_selected_apart():
    study = _study(_grid_runs(task="copy") + _grid_runs(task="transition"))
    rankings = ranking_at_points(study, "copy")
    assert rankings[(("lr", 1e-3),)] == ["attn", "ffn"]
    assert rankings[(("lr", 1e-1),)] == ["ffn", "attn"]
    assert ranking_flips(rankings)
    assert not ranking_flips({k: v for k, v in rankings.items() if k != (("lr", 1e-1),)})
    sel = select_settings(study)
    assert [(s.task, s.placement) for s in sel] == [
        ("copy", "attn"),
        ("copy", "ffn"),
        ("transition", "attn"),
        ("transition", "ffn"),
    ]


def _selected(out: Path) -> dict[str, str]:
    return {s.placement: s.chosen.label for s in select_settings(read_study_data(out))}


@pytest.mark.slow
def test_a_study_whose_test_split_is_other_data_selects_the_same(tmp_path, monkeypatch):
    lrs = [1e-3, 3e-2, 3e-1]
    cfg = tiny_study(tmp_path, select={"by": "eval_loss"}, seeds=[0, 1])
    cfg["train"] = {**cfg["train"], "lr": lrs}
    run_study(validate_study(cfg), assets=Assets())
    first = read_study_data(tmp_path / "out")
    assert len([r for r in first.runs if r.kind == "lora"]) == 2 * 3 * 2
    assert all("test_loss" in r.metrics for r in first.runs)

    # The same study, its test split replaced by other text: another store, new run ids.
    other = write_text(tmp_path / "other.txt", n_sentences=300, seed=7)
    real = Assets.blocks

    def swapped(self, dataset, **kw):
        if kw.get("holdout") == "test":
            kw = {**kw, "test_fraction": 0.5}
            dataset = str(other)
        return real(self, dataset, **kw)

    monkeypatch.setattr(Assets, "blocks", swapped)
    run_study(validate_study({**cfg, "out": str(tmp_path / "swapped")}), assets=Assets())
    second = read_study_data(tmp_path / "swapped")

    assert _selected(tmp_path / "out") == _selected(tmp_path / "swapped")
    val = {(r.placement, r.seed): r.metrics["eval_loss"] for r in first.runs}
    test = {(r.placement, r.seed): r.metrics["test_loss"] for r in first.runs}
    for r in second.runs:
        assert r.metrics["eval_loss"] == pytest.approx(val[r.placement, r.seed], abs=1e-6)
        assert r.metrics["test_loss"] != pytest.approx(test[r.placement, r.seed], abs=1e-3)
    assert {r.run_id for r in first.runs}.isdisjoint(r.run_id for r in second.runs)


@pytest.mark.slow
def test_run_warns_when_seeds_cannot_resolve_the_margin(tmp_path, capsys):
    import yaml

    from loraplace.cli import run_cli

    cfg = tiny_study(tmp_path, analysis={"margin": 1e-4}, seeds=[0, 1])
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert run_cli(["run", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "warning: 2 seeds are too few to resolve the ±0.0001 margin: seed-full vs seed-ffn" in out
    )
    assert "add seeds to the study" in out


def test_headline_view_drops_validation_perplexities_and_reads_test_task_scores():
    """A chosen run's eval_ppl is exp of its validation loss; beside the test loss it made
    the report warn "eval_ppl is not exp(eval_loss)" for every chosen run."""
    import math

    from loraplace.analysis.consistency import consistency

    runs = []
    for r in _grid_runs():
        m = dict(r.metrics)
        m |= {
            "eval_ppl": math.exp(m["eval_loss"]),
            "mean_batch_ppl": 1.2 * math.exp(m["eval_loss"]),
        }
        m |= {
            "task:answer": 0.25,
            "test_task:answer": 0.75,
            "accuracy": 0.25,
            "test_accuracy": 0.75,
        }
        runs.append(dataclasses.replace(r, metrics=m))
    study = _study(runs)
    summary = summarize(headline_view(study, select_settings(study), None))
    assert consistency(summary).mismatches == []
    attn = summary.get("attn")
    assert [r.metrics["task:answer"] for r in attn.runs] == [0.75, 0.75, 0.75]
    assert [r.metrics["accuracy"] for r in attn.runs] == [0.75, 0.75, 0.75]
    assert all("eval_ppl" not in r.metrics and "mean_batch_ppl" not in r.metrics for r in attn.runs)
