"""Runs side by side in worker processes: the same numbers as in-process, Ctrl-C, a dead worker."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from run_fixtures import tiny_study
from test_driver import _wait_for_a_trained_run_in_flight, runs_of

from loraplace.assets import Assets
from loraplace.cli import run_cli
from loraplace.driver import prepare_study, worker_count
from loraplace.executors.base import NullProgress
from loraplace.executors.pool import PoolExecutor
from loraplace.store import Store
from loraplace.study import validate_study

pytestmark = pytest.mark.slow  # worker processes import torch: a few seconds each


def _study(tmp_path: Path, out: str, **overrides) -> Path:
    config = tiny_study(tmp_path, out=str(tmp_path / out), threads=1, **overrides)
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _numbers(out: Path) -> dict[str, tuple[str, float]]:
    with Store(out, create=False, writer=False) as store:
        metrics = store.metrics()
        return {r["run_id"]: (r["status"], metrics[r["run_id"]]["eval_loss"]) for r in store.runs()}


def test_two_workers_give_the_numbers_of_one_process_bit_for_bit(tmp_path, capsys):
    assert run_cli(["run", str(_study(tmp_path, "inproc"))]) == 0
    assert run_cli(["run", str(_study(tmp_path, "pool", workers=2))]) == 0
    inproc, pool = _numbers(tmp_path / "inproc"), _numbers(tmp_path / "pool")
    assert len(pool) == 5  # 2 placements x 2 seeds + zero-shot
    assert pool == inproc  # same run ids, statuses done, identical eval losses
    assert {status for status, _ in pool.values()} == {"done"}
    with Store(tmp_path / "pool", create=False, writer=False) as store:
        workers = {r["run_id"]: store.manifest(r["run_id"]).get("worker") for r in store.runs()}
    assert all(w["executor"] == "pool" for w in workers.values()), workers
    assert len({w["pid"] for w in workers.values()}) == 2  # both workers took runs


def test_workers_auto_is_one_per_core_on_a_cpu_and_never_more_than_the_runs(tmp_path):
    study = validate_study(tiny_study(tmp_path, workers="auto"))
    cores = len(os.sched_getaffinity(0))
    assert worker_count(study, 100) == cores
    assert worker_count(study, 1) == 1
    assert worker_count(validate_study(tiny_study(tmp_path, workers=3)), 2) == 2
    assert worker_count(validate_study(tiny_study(tmp_path)), 100) == 1  # not asked: in-process


def test_workers_is_not_part_of_the_study_id(tmp_path):
    base = validate_study(tiny_study(tmp_path))
    assert validate_study(tiny_study(tmp_path, workers=2)).study_id == base.study_id


@pytest.mark.parametrize("value", [0, -1])
def test_a_bad_worker_count_is_one_line(tmp_path, capsys, value):
    code = run_cli(["run", str(_study(tmp_path, "bad")), f"workers={value}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "workers" in err[0], err
    assert not (tmp_path / "bad").exists()


def test_sigterm_stops_the_workers_and_marks_their_runs_interrupted(tmp_path):
    study = _study(tmp_path, "out", seeds=[0, 1, 2], workers=2)
    command = [sys.executable, "-m", "loraplace", "run", str(study), "train.steps=150"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    _wait_for_a_trained_run_in_flight(proc, tmp_path / "out" / "loraplace.db", max_running=2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    statuses = [r["status"] for r in runs_of(tmp_path / "out")]
    # At most 2 per worker: the run it trains, and one it finished whose result was still
    # on its way back when the signal came (CI saw 3 of 2 workers once).
    assert "running" not in statuses and 1 <= statuses.count("interrupted") <= 4, statuses
    assert run_cli(["run", str(study), "train.steps=150"]) == 0  # resumes to the end
    assert {r["status"] for r in runs_of(tmp_path / "out")} == {"done"}


class _KillWorkersOnStart(NullProgress):
    """Kills every worker process as soon as one takes a run."""

    def run_started(self, spec) -> None:
        for child in mp.active_children():
            os.kill(child.pid, signal.SIGKILL)


def test_a_worker_that_dies_fails_its_runs_not_the_study(tmp_path):
    config = tiny_study(tmp_path)
    config["train"]["steps"] = 400
    study = validate_study(config)
    specs = prepare_study(study, Assets()).specs[:3]
    results: list = []
    PoolExecutor(2).run(specs, results.append, _KillWorkersOnStart())
    assert len(results) == 3 and {r.status for r in results} == {"failed"}
    assert all("worker process" in r.error for r in results), [r.error for r in results]
