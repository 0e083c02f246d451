"""Short runs and the proxy model: the specs they train, and a study validated end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from run_fixtures import tiny_study, write_tiny_model

from loraplace.cli import run_cli
from loraplace.predict import Candidate, Context
from loraplace.predict.training import _arch, carry_over, short_spec
from loraplace.runs import RunSpec, TrainSettings


def _mod(layer: int, suffix: str, role: str, rank: int, fin: int, fout: int) -> dict:
    return {
        "name": f"transformer.h.{layer}.{suffix}",
        "role": role,
        "layer": layer,
        "in_features": fin,
        "out_features": fout,
        "rank": rank,
        "alpha": 2.0 * rank,
    }


def test_short_spec_trains_a_fraction_of_the_steps_and_evaluates_once():
    template = RunSpec(
        study="s",
        placement_name="a",
        kind="lora",
        model="tiny-markov",
        dataset="markov-mix",
        seed=2,
        train=TrainSettings(steps=250, warmup_steps=20, eval_every=50),
        retain_dataset="markov-base",
        fingerprints={"data": "d", "model": "m"},
    ).to_dict()
    ctx = Context("tiny-markov", "markov-mix", 4528, template, seed=0)
    cand = Candidate("attn-o", (_mod(0, "attn.c_proj", "attn.o", 4, 128, 128),))
    spec = short_spec(ctx, cand, model="tiny-markov", fraction=0.1)
    t = spec.train
    assert (t.steps, t.warmup_steps, t.eval_every, spec.seed) == (25, 2, 0, 0)
    assert spec.retain_dataset is None and spec.modules == cand.modules
    assert spec.fingerprints == {"data": "d", "model": "m"}
    other = short_spec(ctx, cand, model="elsewhere", fraction=1.0)
    assert other.train.steps == 250 and other.fingerprints == {"data": "d"}


def test_carry_over_maps_layers_roles_ranks_and_alpha_per_rank(tmp_path):
    proxy = _arch(str(write_tiny_model(tmp_path / "p", n_layer=2)))  # d=32
    mods = (
        _mod(0, "attn.c_proj", "attn.o", 2, 32, 32),
        _mod(1, "attn.c_proj", "attn.o", 8, 32, 32),  # layers 0, 1 -> 0: rank 8 wins
        _mod(3, "mlp.c_proj", "mlp.down", 4, 128, 32),  # layer 3 of 4 -> 1
        _mod(2, "mlp.c_fc", "mlp.up", 64, 32, 128),  # rank capped at the proxy's 32
    )
    out = carry_over(mods, 4, proxy)
    got = [(m["name"], m["rank"], m["alpha"]) for m in out]
    assert got == [
        ("transformer.h.0.attn.c_proj", 8, 16.0),
        ("transformer.h.1.mlp.c_fc", 32, 64.0),
        ("transformer.h.1.mlp.c_proj", 4, 8.0),
    ]
    assert carry_over((), 4, proxy) == []


@pytest.mark.slow
def test_validate_runs_every_predictor_on_a_finished_study(tmp_path):
    config = tiny_study(tmp_path, placements=["seed-full", "seed-ffn", "attn-o"], zero_shot=False)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    assert run_cli(["run", str(tmp_path / "study.yaml")]) == 0
    proxy = write_tiny_model(tmp_path / "proxy", n_layer=1)
    predictors = "taylor,lora_grad,out_norm,plop,short-runs,proxy"
    args = ["validate", str(tmp_path / "out"), "-p", predictors, "--proxy-model", str(proxy)]
    assert run_cli([*args, "--short-fraction", "0.5"]) == 0
    doc = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert [c["predictor"] for c in doc["cells"]] == predictors.split(",")
    for cell in doc["cells"]:
        assert cell["n_candidates"] == 3 and cell["regret_seeds"] == 2
        assert cell["seconds"] > 0 and 0 < cell["cost_fraction"]
        assert cell["regret"] >= 0 and -1 <= cell["tau"] <= 1
    preds = {p["predictor"]: p for p in doc["predictions"]}
    assert preds["short-runs"]["detail"]["steps"] == 3  # half of 6
    assert preds["proxy"]["detail"]["layers"] == 1
    assert len(preds["plop"]["detail"]["pick"]) == 3
    assert Path(tmp_path / "out" / "validation.md").read_text().count("\n| ") == 8  # head, rule, 6
