"""The one learning-rate schedule: fine-tuning runs and the built-ins' pretraining."""

from __future__ import annotations

import pytest

from loraplace.runs import TrainSettings
from loraplace.schedule import scheduled_lr
from loraplace.train.loop import lr_at


@pytest.mark.parametrize(
    "step, schedule, min_frac, want",
    [
        (0, "cosine", 0.0, 0.5),  # warm-up: (step + 1) / warmup
        (1, "cosine", 0.0, 1.0),
        (2, "cosine", 0.0, 1.0),  # decay starts at the peak
        (6, "cosine", 0.0, 0.5),  # half-way: cos(pi / 2) = 0
        (6, "linear", 0.0, 0.5),
        (8, "linear", 0.0, 0.25),
        (9, "constant", 0.0, 1.0),
        (6, "cosine", 0.1, 0.55),  # 0.1 + 0.9 x 0.5
        (10, "cosine", 0.1, 0.1),  # the floor at the last step
    ],
)
def test_warmup_then_decay(step, schedule, min_frac, want):
    got = scheduled_lr(step, lr=1.0, warmup=2, steps=10, schedule=schedule, min_frac=min_frac)
    assert got == pytest.approx(want, abs=1e-12)


def test_a_run_reads_the_same_schedule():
    t = TrainSettings(lr=2e-3, warmup_steps=2, schedule="linear")
    assert [lr_at(s, t, 10) for s in (0, 1, 6)] == pytest.approx([1e-3, 2e-3, 1e-3])
