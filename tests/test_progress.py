"""Plain progress lines of training runs off a terminal (progress.StepLines, the run display)."""

from __future__ import annotations

import io

from rich.console import Console

from loraplace.progress import StepLines, duration


def test_duration_reads_short():
    assert [duration(s) for s in (0, 42.4, 60, 185, 3599, 3720)] == [
        "0s",
        "42s",
        "1m00s",
        "3m05s",
        "59m59s",
        "1h02m",
    ]


def test_lines_at_most_every_10_s_with_step_loss_speed_and_time_left():
    now = [0.0]
    lines: list[str] = []
    sl = StepLines(lines.append, clock=lambda: now[0])
    sl.start("all-linear seed 0")
    for t, step in ((3, 6), (9.9, 19), (10, 20), (15, 30), (19.9, 39), (21, 42), (40, 80)):
        now[0] = t
        sl.step(step, 100, 2.0 + step / 1000, 1234.5)
    assert lines == [
        "all-linear seed 0: step 20/100, loss 2.0200, 1,234 tok/s, 40s left",
        "all-linear seed 0: step 42/100, loss 2.0420, 1,234 tok/s, 29s left",
        "all-linear seed 0: step 80/100, loss 2.0800, 1,234 tok/s, 10s left",
    ]
    now[0] = 45.0
    sl.start("mlp seed 1")  # a new run: its clock and its first line start over
    now[0] = 50.0
    assert sl.step(10, 100, 1.5, 100.0) is None
    now[0] = 55.0
    assert (
        sl.step(20, 100, 1.5, 100.0) == "mlp seed 1: step 20/100, loss 1.5000, 100 tok/s, 40s left"
    )


def test_run_display_prints_plain_lines_only_off_a_terminal():
    from types import SimpleNamespace

    from loraplace.cli.run import RichDisplay

    spec = SimpleNamespace(
        placement_name="attention",
        model_name=None,
        task=None,
        seed=3,
        kind="train",
        train=SimpleNamespace(steps=50),
    )
    buf = io.StringIO()
    display = RichDisplay(Console(file=buf, force_terminal=False, width=200))
    assert display.lines is not None
    display.lines.every = 0.0
    display.run_started(spec)  # type: ignore[arg-type]
    display.step(spec, 5, 50, 3.25, 2048.0)  # type: ignore[arg-type]
    (line,) = buf.getvalue().splitlines()
    assert line.startswith("attention seed 3: step 5/50, loss 3.2500, 2,048 tok/s, ")
    assert line.endswith(" left")
    terminal = RichDisplay(Console(file=io.StringIO(), force_terminal=True))
    assert terminal.lines is None  # a terminal gets rich's bars (with time remaining) instead
