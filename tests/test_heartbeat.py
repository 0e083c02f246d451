"""Progress lines of long first-use work: a line every few seconds off a terminal."""

from __future__ import annotations

import io

from loraplace import heartbeat
from loraplace.heartbeat import Heartbeat


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_every_interval_when_not_a_terminal(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(heartbeat.time, "perf_counter", clock)
    out = io.StringIO()
    with Heartbeat("pretraining x", every=5.0, stream=out) as beat:
        assert beat.terminal is False  # a StringIO is not a terminal
        for step in range(1, 31):  # 30 updates, one per simulated second
            clock.now += 1.0
            beat.update(f"step {step}/30")
    assert out.getvalue().splitlines() == [
        "pretraining x: step 5/30, 5 s",
        "pretraining x: step 10/30, 10 s",
        "pretraining x: step 15/30, 15 s",
        "pretraining x: step 20/30, 20 s",
        "pretraining x: step 25/30, 25 s",
        "pretraining x: step 30/30, 30 s",
    ]


def test_short_work_prints_nothing(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(heartbeat.time, "perf_counter", clock)
    out = io.StringIO()
    with Heartbeat("tokenising", every=5.0, stream=out) as beat:
        clock.now += 4.9
        beat.update("256/256 documents")
    assert out.getvalue() == ""


def test_pretraining_progress_reaches_a_redirected_stderr(monkeypatch, tmp_path, capsys):
    """builtin_model_dir's first-use pretraining prints plain lines to a non-terminal stderr."""
    from loraplace import builtin

    clock = _Clock()
    monkeypatch.setattr(heartbeat.time, "perf_counter", clock)
    monkeypatch.setenv("LORAPLACE_CACHE", str(tmp_path))

    def pretrain(out, progress=None):
        out.mkdir(parents=True)
        for step in range(1, 13):
            clock.now += 1.0
            progress(step, 12, 2.0 / step)
        (out / "loraplace_builtin.json").write_text("{}")
        return {"seconds": 12.0}

    spec = builtin.BuiltinModel("slow-model", "v1", "a test double", lambda: None, pretrain)
    monkeypatch.setitem(builtin.BUILTIN_MODELS, "slow-model", spec)
    builtin.builtin_model_dir("slow-model")
    lines = capsys.readouterr().err.splitlines()
    label = "pretraining built-in model slow-model (first use only; cached afterwards)"
    assert lines[:2] == [
        f"{label}: step 5/12, loss 0.400, 5 s",
        f"{label}: step 10/12, loss 0.200, 10 s",
    ]
    assert lines[2].startswith("slow-model: pretrained in 12.0 s")
