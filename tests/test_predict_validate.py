"""Validation of predictors against a hand-made study: tau, top-1, regret and cost, exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_fixtures import modules
from scipy.stats import kendalltau

from loraplace.cli import run_cli
from loraplace.errors import UserError
from loraplace.predict import Prediction
from loraplace.predict.validate import (
    best_validated,
    measured,
    score_cell,
    summary,
    validate,
    write,
)
from loraplace.runs import RunResult, RunSpec, TrainSettings
from loraplace.store import Store

# eval loss per seed 0, 1, 2 (lower is better): A is best, then B, then C
LOSS = {"A": [2.0, 2.1, 2.2], "B": [2.3, 2.1, 2.5], "C": [2.6, 2.7, 2.5]}
COVER = {"A": [("mlp.up", [0])], "B": [("attn.o", [1])], "C": [("attn.qkv", [0, 1])]}
T95_2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)


def write_store(path: Path, loss=LOSS, status: str = "done", accuracy=None) -> Path:
    """One study: each placement x 3 seeds, 10 s of training per run."""
    store = Store(path)
    store.add_study("s1", "hand", {"name": "hand"}, "loraplace run hand.yaml")
    specs = []
    for label, values in loss.items():
        for seed in range(len(values)):
            specs.append(
                RunSpec(
                    study="hand",
                    placement_name=label,
                    kind="lora",
                    model="tiny-markov",
                    dataset="markov-mix",
                    seed=seed,
                    train=TrainSettings(steps=100),
                    modules=modules(COVER.get(label, [("mlp.down", [0])])),
                )
            )
    store.add_runs("s1", specs)
    for spec in specs:
        store.mark_running(spec.run_id)
        m = {"eval_loss": loss[spec.placement_name][spec.seed], "train_time_s": 10.0}
        if accuracy:
            m["accuracy"] = accuracy[spec.placement_name][spec.seed]
        store.save_result(RunResult(spec.run_id, status, m if status == "done" else {}))
    store.close()
    return path


def _study(path: Path):
    from loraplace.analysis.read import read_study_data

    return read_study_data(path).for_task(None)


def test_measured_order_tau_and_regret_by_hand(tmp_path):
    m = measured(_study(write_store(tmp_path / "s.db")))
    assert (m.metric, m.higher_better, m.best, m.seconds) == ("eval_loss", False, "A", 90.0)
    # the predictor puts B first, then A, then C (scores: higher = better)
    pred = Prediction("fake", {"B": 3.0, "A": 2.0, "C": 1.0}, seconds=9.0)
    cell = score_cell(pred, m, "tiny-markov", "markov-mix")
    assert (cell.top1, cell.best, cell.top1_agrees) == ("B", "A", False)
    assert cell.cost_fraction == pytest.approx(0.1)
    # pairs: (A,B) discordant, (A,C) and (B,C) concordant -> tau = (2 - 1) / 3
    assert cell.tau == pytest.approx(1 / 3)
    ref = kendalltau([3.0, 2.0, 1.0], [-2.3, -2.1, -2.6])
    assert cell.tau == pytest.approx(ref.statistic) and cell.tau_p == pytest.approx(ref.pvalue)
    # regret per seed: B - A = 0.3, 0.0, 0.3 -> mean 0.2, sd sqrt(0.03), sem 0.1
    assert cell.regret == pytest.approx(0.2)
    assert cell.regret_ci == pytest.approx(T95_2 * 0.1)
    assert cell.regret_seeds == 3 and cell.within_noise
    assert cell.order == ["B", "A", "C"]
    # choosing C loses 0.6, 0.6, 0.3: 0.5 +- 0.43, clear of zero
    wrong = score_cell(Prediction("bad", {"C": 1.0, "A": 0.0, "B": 0.0}, 1.0), m, "x", "y")
    assert (wrong.regret, wrong.within_noise) == (pytest.approx(0.5), False)
    assert summary({"cells": [wrong.to_json()]}) == (
        "No predictor's regret is within seed noise on at least 1 of 1 cell(s) (bad 0/1)."
    )
    right = score_cell(Prediction("good", {"A": 1.0, "B": 0.5, "C": 0.0}, 1.0), m, "x", "y")
    assert (right.tau, right.regret, right.regret_ci, right.top1_agrees) == (1.0, 0.0, 0.0, True)


def test_accuracy_is_the_metric_when_every_run_has_it(tmp_path):
    acc = {"A": [0.5, 0.6, 0.7], "B": [0.8, 0.8, 0.8], "C": [0.1, 0.2, 0.3]}
    m = measured(_study(write_store(tmp_path / "s.db", accuracy=acc)))
    assert (m.metric, m.higher_better, m.best) == ("accuracy", True, "B")
    cell = score_cell(Prediction("p", {"A": 2.0, "B": 1.0, "C": 0.0}, 1.0), m, "x", "y")
    # chose A: accuracy lost 0.3, 0.2, 0.1 -> 0.2 +- t * 0.1 / sqrt(3)
    assert cell.regret == pytest.approx(0.2)
    assert cell.regret_ci == pytest.approx(T95_2 * 0.1 / 3**0.5)
    assert cell.tau == pytest.approx(kendalltau([2, 1, 0], [0.6, 0.8, 0.2]).statistic)
    assert cell.tau == pytest.approx(1 / 3)


def test_written_files_agree_and_best_validated_picks_lowest_regret(tmp_path):
    m = measured(_study(write_store(tmp_path / "s.db")))
    cells = [
        score_cell(Prediction("p1", {"B": 3.0, "A": 2.0, "C": 1.0}, 5.0), m, "tiny-markov", "t"),
        score_cell(Prediction("p2", {"A": 3.0, "C": 2.0, "B": 1.0}, 50.0), m, "tiny-markov", "t"),
    ]
    doc = {"study": "hand", "datasets": {"t": "markov-mix"}, "cells": [c.to_json() for c in cells]}
    md, js, cs = write(doc, tmp_path / "out")
    lines = md.read_text().splitlines()
    assert lines[6].startswith("| p1 | tiny-markov | t | 5.0 | 0.056 | B | A | no | 0.333 |")
    assert lines[7].endswith("| A | A | yes | 0.333 | 0.0000 ± 0.0000 (3) |")
    # p1's regret 0.2 +- 0.43 reaches 0 too: both within noise, p1 the cheaper
    assert lines[9] == (
        "Cheapest predictor (mean cost fraction) with regret within seed noise (95 % CI "
        "reaching 0) on at least 1 of 1 cell(s): **p1** (cells within noise: p1 1/1, p2 1/1)."
    )
    assert json.loads(js.read_text())["cells"][1]["top1_agrees"] is True
    assert cs.read_text().splitlines()[0].startswith("predictor,model,task,metric")
    best = best_validated(doc, "tiny-markov", "markov-mix")
    assert best is not None and best["predictor"] == "p2"  # regret 0 beats 0.2
    assert best_validated(doc, "tiny-markov", "other-data") is None


@pytest.mark.fault("predict")
@pytest.mark.parametrize(
    "case, args, message",
    [
        ("no store", ["-p", "taylor"], "no results store"),
        ("failed runs", ["-p", "taylor"], "no finished LoRA run"),
        ("one placement", ["-p", "taylor"], "needs at least 2"),
        ("unknown", ["-p", "taylr"], "unknown predictor 'taylr' (did you mean \"taylor\"?)"),
        ("proxy", ["-p", "plop,proxy"], "predictor 'proxy' needs proxy_model"),
        ("fraction", ["-p", "taylor", "--short-fraction", "1.5"], "--short-fraction 1.5 must"),
        ("no proxy", ["-p", "proxy", "--proxy-model", "nowhere/x"], "nowhere/x"),
    ],
)
def test_user_errors_are_one_line_and_write_nothing(tmp_path, capsys, case, args, message):
    out = tmp_path / "out"
    if case == "failed runs":
        write_store(out / "loraplace.db", status="failed")
    elif case == "one placement":
        write_store(out / "loraplace.db", loss={"A": [2.0, 2.1]})
    elif case != "no store":
        write_store(out / "loraplace.db")
    assert run_cli(["validate", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (out / "validation.json").exists()


def test_validate_checks_options_before_reading(tmp_path):
    with pytest.raises(UserError, match="needs proxy_model"):
        validate(write_store(tmp_path / "s.db"), ["proxy"], options={"proxy_model": ""})


def test_validate_scores_each_task_of_a_study_with_a_registered_predictor(tmp_path):
    from loraplace.predict.base import PREDICTORS, PredictorInfo, register

    def alphabetical(ctx, cands):  # A first: right on t1, wrong on t2
        return Prediction("alpha", {c.label: -ord(c.label[0]) for c in cands}, 2.0)

    store = Store(tmp_path / "s.db")
    store.add_study("s2", "multi", {"name": "multi"}, "loraplace run multi.yaml")
    losses = {"t1": {"A": [1.0, 1.1], "B": [1.2, 1.4]}, "t2": {"A": [2.0, 2.2], "B": [1.9, 2.0]}}
    specs = [
        RunSpec(
            study="multi",
            placement_name=label,
            kind="lora",
            model="tiny-markov",
            dataset=f"data-{task}",
            seed=seed,
            modules=modules(COVER[label]),
            task=task,
        )
        for task, by in losses.items()
        for label, values in by.items()
        for seed in range(len(values))
    ]
    zero = RunSpec("multi", "zero-shot", "zero-shot", "tiny-markov", "data-t1", 0)
    store.add_runs("s2", [zero, *specs])  # a baseline outside the tasks: nothing to rank
    store.mark_running(zero.run_id)
    store.save_result(RunResult(zero.run_id, "done", {"eval_loss": 3.0}))
    for s in specs:
        store.mark_running(s.run_id)
        m = {"eval_loss": losses[s.task][s.placement_name][s.seed], "train_time_s": 5.0}
        store.save_result(RunResult(s.run_id, "done", m))
    store.close()
    register(PredictorInfo("alpha", "test only", alphabetical))
    try:
        doc = validate(tmp_path / "s.db", ["alpha"])
    finally:
        del PREDICTORS["alpha"]
    got = [(c["task"], c["top1"], c["best"], c["tau"], c["study_seconds"]) for c in doc["cells"]]
    assert got == [("t1", "A", "A", 1.0, 20.0), ("t2", "A", "B", -1.0, 20.0)]
    # t2: A - B = 0.1, 0.2 -> 0.15 +- t(0.975, 1) * 0.05
    assert doc["cells"][1]["regret"] == pytest.approx(0.15)
    assert doc["cells"][1]["regret_ci"] == pytest.approx(12.706204736174698 * 0.05)
    assert doc["datasets"] == {"t1": "data-t1", "t2": "data-t2"}
    assert best_validated(doc, "tiny-markov", "data-t2")["cells"][0]["task"] == "t2"
