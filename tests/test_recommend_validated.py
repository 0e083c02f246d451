"""`recommend` follows the predictor that validated best, and says so in one line."""

from __future__ import annotations

import json

import pytest
from run_fixtures import write_text, write_tiny_model

from loraplace.cli import run_cli


def _cell(predictor: str, regret: float, tau: float, model: str, task: str) -> dict:
    return {
        "predictor": predictor,
        "model": model,
        "task": task,
        "metric": "eval_loss",
        "seconds": 3.0,
        "cost_fraction": 0.1,
        "top1_agrees": regret == 0,
        "tau": tau,
        "regret": regret,
        "regret_ci": 0.0 if regret == 0 else 0.05,
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec")
    model = str(write_tiny_model(root / "tiny"))
    data = str(write_text(root / "g.txt"))
    doc = {
        "study": "hand",
        "seed": 0,
        "options": {},
        "datasets": {data: data},
        "template": {"train": {"block_size": 16, "split_seed": 0}, "text_field": "text"},
        "cells": [
            _cell("taylor", 0.3, 0.2, model, data),
            _cell("out_norm", 0.0, 2 / 3, model, data),
        ],
    }
    (root / "validation.json").write_text(json.dumps(doc))
    return root, model, data


def _recommend(capsys, *args: str) -> dict:
    assert run_cli(["recommend", *args, "--budget", "600", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_recommend_follows_the_best_validated_predictor(setup, capsys):
    from loraplace.predict import Context, run_predictor
    from loraplace.predict.candidates import allocated_candidates, budget_candidates
    from loraplace.recommend import _meta

    root, model, data = setup
    rec = _recommend(capsys, model, "--data", data, "--validation", str(root))
    assert rec["source"] == "predictor"
    assert rec["followed"] == (
        "followed predictor out_norm: best in the validation on study 'hand' (1 cell(s)): "
        "top-1 agreed 1/1, Kendall tau 0.67, regret 0.0000 ± 0.0000 eval_loss, cost 0.100 "
        "of the study"
    )
    ctx = Context(model, data, 600, {"train": {"block_size": 16}}, 0)
    arch = _meta(model)
    allocated = allocated_candidates(ctx, arch)
    assert [c.label for c in allocated] == ["allocated-taylor", "allocated-lora_grad"]
    assert all(0 < c.params <= 600 for c in allocated)
    cands = budget_candidates(model, 600, arch) + allocated
    assert run_predictor("out_norm", ctx, cands).order[0] == rec["placement"]
    assert rec["trainable_params"] <= 600


def test_recommend_says_when_no_validation_exists(setup, capsys):
    root, model, data = setup
    rec = _recommend(capsys, model, "--data", data)
    assert rec["source"] == "probe"
    assert rec["followed"].startswith(
        "followed: the default (taylor probe allocation): no validation file;"
    )
    other = str(write_text(root / "other.txt", seed=1))
    rec = _recommend(capsys, model, "--data", other, "--validation", str(root))
    assert f"the validation of study 'hand' has no cell for {model} on {other}" in rec["followed"]


def test_a_missing_validation_file_is_one_line(setup, tmp_path, capsys):
    _, model, data = setup
    argv = ["recommend", model, "--data", data, "-b", "600", "--validation", str(tmp_path)]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no validation file at") and "\n" not in err


@pytest.mark.fault("predict")
@pytest.mark.parametrize(
    "text, why",
    [
        ("[1, 2]", "no list of cells"),
        ('{"cells": 5}', "no list of cells"),
        ('{"cells": [3]}', "cell 0 is not a mapping"),
        (
            '{"cells": [{"model": "m", "task": "t", "predictor": "p"}]}',
            "cell 0 has no valid regret",
        ),
        ("not json", "Expecting value"),
    ],
)
def test_a_damaged_validation_file_is_one_line(setup, tmp_path, capsys, text, why):
    _, model, data = setup
    bad = tmp_path / "validation.json"
    bad.write_text(text)
    argv = ["recommend", model, "--data", data, "-b", "600", "--validation", str(bad)]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {bad} is not a validation file ({why}): run validate again", err
