"""The driver end to end on a tiny config: store, resume, kill -9, Ctrl-C, bad studies."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from run_fixtures import tiny_study

from loraplace.cli import run_cli
from loraplace.driver import StudyDisplay, StudyInterrupted, run_study
from loraplace.store import Store
from loraplace.study import validate_study, wants_probe

# Whole studies end to end: `pytest -m "not slow"` skips them.
pytestmark = pytest.mark.slow

torch.set_num_threads(1)


def write_study(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(tiny_study(tmp_path, **overrides)))
    return path


def runs_of(out: Path) -> list[dict]:
    with Store(out, create=False, writer=False) as store:
        return store.runs(store.study()["study_id"])


def test_study_runs_stores_everything_and_a_second_invocation_runs_nothing(tmp_path, capsys):
    study = write_study(tmp_path)
    assert run_cli(["run", str(study)]) == 0
    out = capsys.readouterr().out
    assert "ran 5 of 5 runs" in out
    assert "seed-full" in out and "eval loss ± 95% CI" in out
    runs = runs_of(tmp_path / "out")
    assert [(r["placement"], r["seed"], r["status"]) for r in runs] == [
        ("zero-shot", 0, "done"),  # one evaluation, whatever the seeds
        ("seed-full", 0, "done"),
        ("seed-full", 1, "done"),
        ("seed-ffn", 0, "done"),
        ("seed-ffn", 1, "done"),
    ]
    with Store(tmp_path / "out", create=False, writer=False) as store:
        metrics = store.metrics()
        full = metrics[runs[1]["run_id"]]
        zero = metrics[runs[0]["run_id"]]
        # 2 layers, r=2: c_attn (32->96), attn.c_proj, c_fc (32->128), mlp.c_proj
        assert full["trainable_params"] == 2 * 2 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))
        assert metrics[runs[3]["run_id"]]["trainable_params"] == 2 * 2 * (32 + 128)
        assert zero["trainable_params"] == 0
        assert full["eval_loss"] < zero["eval_loss"] == full["zero_shot_loss"]
        assert full["steps"] == 6
        assert store.curves(runs[0]["run_id"]) == {"eval_loss": [(0, zero["eval_loss"])]}
        curves = store.curves(runs[1]["run_id"])
        assert [s for s, _ in curves["eval_loss"]] == [0, 3, 6]
        assert len(curves["train_loss"]) == len(curves["lr"]) == 6
        manifest = store.manifest(runs[1]["run_id"])
        assert manifest["precision"] == "fp32" and set(manifest["fingerprints"]) == {
            "model",
            "data",
        }
        started = {r["run_id"]: r["started_at"] for r in runs}

    assert run_cli(["run", str(study)]) == 0
    assert "ran 0 of 5 runs" in capsys.readouterr().out
    again = runs_of(tmp_path / "out")
    assert {r["run_id"]: r["started_at"] for r in again} == started

    # A changed setting makes new runs and keeps the old ones.
    assert run_cli(["run", str(study), "train.steps=3", "placements=[seed-ffn]"]) == 0
    with Store(tmp_path / "out", create=False, writer=False) as store:
        assert len(store.studies()) == 2
        assert len(store.runs()) == 7  # 5 + 2 new seed-ffn runs (the zero-shot run is shared)

    assert run_cli(["status", str(tmp_path / "out")]) == 0
    status = capsys.readouterr().out
    assert "tiny" in status and "5 done" in status


def test_huge_learning_rate_marks_runs_diverged_without_numbers(tmp_path):
    config = tiny_study(tmp_path, placements=["seed-ffn"], seeds=[0], zero_shot=False)
    config["train"].update(lr=1e30, warmup_steps=0, grad_clip=0.0)
    outcome = run_study(validate_study(config))
    assert outcome.statuses == {"diverged": 1}
    (run,) = runs_of(tmp_path / "out")
    assert run["status"] == "diverged" and run["diverged_step"] >= 1
    with Store(tmp_path / "out", create=False, writer=False) as store:
        assert store.metrics() == {}
    assert run_study(validate_study(config)).ran == 0  # diverged counts as finished


def _bad_placement(tmp):
    return {"placements": [{"target_modules": ["q_proj"]}]}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: {"trian": {"steps": 3}}, "unknown key 'trian' (did you mean \"train\"?)"),
        (lambda t: {"seeds": "zero"}, "key 'seeds': Input should be a valid list"),
        (lambda t: {"dataset": str(t / "missing.txt")}, "missing.txt"),
        (_bad_placement, "'q_proj' of placement 'q_proj' matches no linear layer"),
        (lambda t: {"model": str(t / "no-model")}, "no-model"),
    ],
)
def test_bad_study_files_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, change, message):
    config = tiny_study(tmp_path)
    config.update(change(tmp_path))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert run_cli(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err
    assert "\n" not in err
    assert not (tmp_path / "out").exists()


class _InterruptOnSecondRun(StudyDisplay):
    def __init__(self):
        self.started = 0

    def run_started(self, spec):
        self.started += 1

    def step(self, spec, step, steps, loss, tokens_per_s):
        if self.started == 2 and step == 2:
            raise KeyboardInterrupt


def test_ctrl_c_marks_the_current_run_interrupted_and_rerun_finishes(tmp_path):
    config = tiny_study(tmp_path, zero_shot=False)
    study = validate_study(config)
    with pytest.raises(StudyInterrupted):
        run_study(study, display=_InterruptOnSecondRun())
    assert [r["status"] for r in runs_of(tmp_path / "out")] == [
        "done",
        "interrupted",
        "pending",
        "pending",
    ]
    outcome = run_study(study)
    assert (outcome.ran, outcome.statuses) == (3, {"done": 4})


def test_ctrl_c_in_the_cli_exits_130(tmp_path, monkeypatch, capsys):
    from loraplace.cli import run as run_mod

    monkeypatch.setattr(run_mod.RichDisplay, "step", _InterruptOnSecondRun.step)
    monkeypatch.setattr(run_mod.RichDisplay, "started", 2, raising=False)
    assert run_cli(["run", str(write_study(tmp_path, zero_shot=False))]) == 130
    assert "marked interrupted" in capsys.readouterr().out
    assert runs_of(tmp_path / "out")[0]["status"] == "interrupted"


def _wait_for_a_trained_run_in_flight(proc, db: Path, max_running: int = 1) -> None:
    """Until the zero-shot run and a trained run are done and 1..max_running are in flight."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                con = sqlite3.connect(db, timeout=1)
                counts = dict(con.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"))
                con.close()
            except sqlite3.OperationalError:
                counts = {}
            # the zero-shot run and at least one trained run done, another in flight
            if counts.get("done", 0) >= 2 and 1 <= counts.get("running", 0) <= max_running:
                return
        time.sleep(0.05)
    raise AssertionError("the study finished (or stalled) before it could be stopped")


def test_sigterm_is_a_clean_stop_like_ctrl_c(tmp_path):
    study = write_study(tmp_path, seeds=[0, 1, 2])
    command = [sys.executable, "-m", "loraplace", "run", str(study), "train.steps=150", "threads=1"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    _wait_for_a_trained_run_in_flight(proc, tmp_path / "out" / "loraplace.db")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted by SIGTERM: 1 run(s) marked interrupted" in out
    runs = runs_of(tmp_path / "out")
    statuses = [r["status"] for r in runs]
    assert statuses.count("interrupted") == 1 and "running" not in statuses
    assert [r["error"] for r in runs if r["status"] == "interrupted"] == ["stopped by SIGTERM"]


def test_kill_9_mid_study_then_resume_finishes_every_run_once(tmp_path):
    study = write_study(tmp_path, seeds=[0, 1, 2])
    command = [sys.executable, "-m", "loraplace", "run", str(study), "train.steps=150", "threads=1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _wait_for_a_trained_run_in_flight(proc, tmp_path / "out" / "loraplace.db")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    before = runs_of(tmp_path / "out")  # the store opens (and marks the dead run interrupted)
    finished = {r["run_id"] for r in before if r["status"] == "done"}
    assert 2 <= len(finished) < 7
    assert run_cli(["run", str(study), "train.steps=150"]) == 0
    after = runs_of(tmp_path / "out")
    assert len(after) == 7 == len({r["run_id"] for r in after})
    assert all(r["status"] == "done" for r in after)
    with Store(tmp_path / "out", create=False, writer=False) as store:
        assert len(store.runs()) == 7
        metrics = store.metrics()
        assert all(
            metrics[r["run_id"]]["eval_loss"] > 0 for r in after
        )  # every run has its numbers, finished ones untouched
        rows = store.conn.execute("SELECT COUNT(*) FROM metrics WHERE name='eval_loss'").fetchone()
        assert rows[0] == 7


def test_sinks_copy_each_run_to_tensorboard_and_mlflow(tmp_path, monkeypatch):
    import types

    logged: list[tuple] = []
    import importlib.machinery

    import peft  # noqa: F401  (imported before the fake: accelerate probes for mlflow)

    fake = types.ModuleType("mlflow")
    fake.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
    fake.set_tracking_uri = lambda uri: logged.append(("uri", uri))
    fake.set_experiment = lambda name: logged.append(("experiment", name))

    class _Run:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    fake.start_run = lambda run_name: logged.append(("run", run_name)) or _Run()
    fake.log_params = lambda params: logged.append(("params", params["placement"]))
    fake.set_tag = lambda k, v: logged.append(("tag", v))
    fake.log_metrics = lambda m: logged.append(("metrics", round(m["eval_loss"], 6)))
    fake.log_metric = lambda name, value, step: None
    monkeypatch.setitem(sys.modules, "mlflow", fake)

    sinks = {"tensorboard": str(tmp_path / "tb"), "mlflow": "sqlite:///x.db"}
    config = tiny_study(tmp_path, placements=["seed-ffn"], seeds=[0], sinks=sinks)
    study = validate_study(config)
    assert study.study_id == validate_study({**config, "sinks": {}}).study_id
    run_study(study)
    events = list((tmp_path / "tb").glob("*/events.out.tfevents.*"))
    assert len(events) == 2  # zero-shot and seed-ffn
    assert logged[:2] == [("uri", "sqlite:///x.db"), ("experiment", "tiny")]
    assert [x[1] for x in logged if x[0] == "params"] == ["zero-shot", "seed-ffn"]
    with Store(tmp_path / "out", create=False, writer=False) as store:
        losses = sorted(round(m["eval_loss"], 6) for m in store.metrics().values())
    assert sorted(x[1] for x in logged if x[0] == "metrics") == losses


def test_a_sink_without_its_package_is_a_user_error_before_any_write(tmp_path, monkeypatch, capsys):
    import peft  # noqa: F401  (imported first: accelerate probes for mlflow)

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    path = write_study(tmp_path, sinks={"mlflow": "sqlite:///x.db"})
    capsys.readouterr()
    assert run_cli(["run", str(path)]) == 2
    assert "pip install loraplace[tracking]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "values, half_width",
    [
        ([1.0, 2.0, 3.0], 4.302652729911275 * 1.0 / 3**0.5),  # t(0.975, 2) x s / sqrt(n)
        ([2.0, 2.0], 0.0),
        ([5.0], None),  # one seed: no interval
    ],
)
def test_t_confidence_interval(values, half_width):
    from loraplace.run_table import t_ci95

    assert t_ci95(values) == (pytest.approx(half_width) if half_width is not None else None)


def test_an_allocate_study_without_a_probe_section_probes_with_the_defaults(tmp_path):
    """``allocate`` implies the probe: ProbeConfig's defaults, 4 batches of 8 blocks, seed 0."""
    from run_fixtures import load_tiny

    from loraplace.driver import _probe

    model, blocks = load_tiny(tmp_path)
    cfg = tiny_study(tmp_path, placements=[{"name": "alloc", "allocate": "taylor"}], budget=512)
    study = validate_study(cfg)
    assert study.probe is None and wants_probe(study)
    meta = _probe(study, model, blocks.train).meta
    assert (meta["batches"], meta["batch_size"], meta["seed"]) == (4, 8, 0)
    assert meta["tokens"] == 4 * 8 * 16 and meta["block_size"] == 16
