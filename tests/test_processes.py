"""Runs in worker processes of one thread each (executors/processes.py): the same numbers."""

from __future__ import annotations

import pytest
import torch
from run_fixtures import tiny_study

from loraplace.assets import Assets
from loraplace.driver import prepare_study
from loraplace.executors.local import LocalExecutor
from loraplace.executors.processes import ProcessExecutor
from loraplace.runs import RunResult
from loraplace.study import validate_study

pytestmark = pytest.mark.slow  # spawns two Python processes that import torch


def _collect(executor, specs) -> dict[str, RunResult]:
    out: list[RunResult] = []
    executor.run(specs, out.append)
    assert sorted(r.run_id for r in out) == sorted(s.run_id for s in specs)
    return {r.run_id: r for r in out}


def test_two_one_thread_workers_give_the_sequential_one_thread_numbers(tmp_path):
    cfg = tiny_study(tmp_path, name="procs", zero_shot=False, out=str(tmp_path / "o"))
    study = validate_study(cfg)
    assets = Assets()
    specs = prepare_study(study, assets).specs
    assert len(specs) == 4
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sequential = _collect(LocalExecutor(assets), specs)
    finally:
        torch.set_num_threads(threads)
    parallel = _collect(ProcessExecutor(processes=2, threads=1), specs)
    for rid, res in parallel.items():
        assert res.status == sequential[rid].status == "done"
        for name in ("eval_loss", "zero_shot_loss", "train_tokens", "trainable_params"):
            assert res.metrics[name] == sequential[rid].metrics[name]  # bit for bit
        assert res.curves["train_loss"] == sequential[rid].curves["train_loss"]
