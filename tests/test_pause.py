"""A run stopped at a rung and continued is the run trained straight through."""

from __future__ import annotations

import torch
from run_fixtures import load_tiny
from test_train import _spec

from loraplace.train import train_run
from loraplace.train.pause import Pause

torch.set_num_threads(1)


def test_stop_then_continue_equals_one_straight_run(tmp_path):
    model, blocks = load_tiny(tmp_path / "tiny")
    spec = _spec(model, steps=8, eval_every=4)
    straight = train_run(spec, model, blocks, keep_adapter=False)

    pause = Pause(tmp_path / "ckpt" / f"{spec.run_id}.pt", stop_at=3)
    first = train_run(spec, model, blocks, keep_adapter=False, pause=pause)
    assert first.status == "paused" and pause.path.is_file()
    assert first.metrics["rung_steps"] == 3
    assert "eval_loss" not in first.metrics  # a rung's number never reads as a result
    assert [s for s, _ in first.curves["train_loss"]] == [1, 2, 3]
    assert first.curves["train_loss"] == straight.curves["train_loss"][:3]
    # the rung's eval point is the partial curve's last point, after the step-0 baseline
    assert first.curves["eval_loss"][0] == straight.curves["eval_loss"][0]
    assert first.curves["eval_loss"][-1] == (3, first.metrics["rung_eval_loss"])

    # a second stop further on, then the rest: three pieces, still the same run
    second = train_run(spec, model, blocks, keep_adapter=False, pause=Pause(pause.path, 6))
    assert second.status == "paused" and second.metrics["rung_steps"] == 6
    assert second.curves["train_loss"] == straight.curves["train_loss"][:6]
    rest = train_run(spec, model, blocks, keep_adapter=False, pause=Pause(pause.path))
    assert rest.status == "done"
    assert rest.curves["train_loss"] == straight.curves["train_loss"]  # bit for bit
    assert rest.curves["lr"] == straight.curves["lr"]
    assert rest.metrics["eval_loss"] == straight.metrics["eval_loss"]
    assert rest.metrics["steps"] == 8
    # the eval curve holds the straight run's points plus the two rung evaluations
    assert set(straight.curves["eval_loss"]) <= set(rest.curves["eval_loss"])
    assert [s for s, _ in rest.curves["eval_loss"]] == [0, 3, 4, 6, 8]
