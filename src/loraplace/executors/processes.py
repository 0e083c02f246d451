"""Runs side by side in worker processes of few threads each (a prototype, not a default).

A small model (the built-in d=128 GPT-2) leaves a second core half idle: its matrices are
too small for two threads to share one step well. Independent runs in separate processes,
one thread each, keep both cores busy instead. Each worker is a fresh interpreter (spawn:
forking a process whose torch thread pool has started is unsafe) with its own ``Assets``:
it loads the model, the blocks and the zero-shot baseline once, then takes specs from a
shared queue until none is left. A run in a worker is the same ``LocalExecutor.run_one``
as in-process, at the worker's thread count: at one thread its numbers equal a
sequential one-thread run's bit for bit (tests/test_processes.py); at another thread
count they differ by float rounding (reductions split differently).

Step progress is not forwarded (only each run's start); a worker that dies leaves its
run ``failed``.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
from collections.abc import Sequence

from loraplace.executors.base import NullProgress, ResultCallback, RunProgress
from loraplace.runs import RunResult, RunSpec

_POLL_S = 1.0  # how often the parent checks that its workers are alive


def _worker(tasks, results, threads: int, peak_flops: float | None, keep: bool) -> None:
    import torch

    torch.set_num_threads(threads)
    from loraplace.executors.local import LocalExecutor

    executor = LocalExecutor(peak_flops=peak_flops, keep_adapters=keep)
    while (spec := tasks.get()) is not None:
        results.put(("started", spec))
        results.put(("result", executor.run_one(spec)))


class ProcessExecutor:
    """Runs specs in ``processes`` worker processes of ``threads`` torch threads each."""

    def __init__(
        self,
        processes: int = 2,
        threads: int = 1,
        peak_flops: float | None = None,
        keep_adapters: bool = True,
    ):
        self.processes, self.threads = processes, threads
        self.peak_flops = peak_flops  # FLOP/s for MFU; measured in each worker when None
        self.keep_adapters = keep_adapters

    def run(
        self,
        specs: Sequence[RunSpec],
        on_result: ResultCallback,
        progress: RunProgress | None = None,
    ) -> None:
        progress = progress or NullProgress()
        ctx = mp.get_context("spawn")
        tasks, results = ctx.Queue(), ctx.Queue()
        for spec in specs:
            tasks.put(spec)
        n = min(self.processes, len(specs))
        for _ in range(n):
            tasks.put(None)  # one stop sign per worker
        args = (tasks, results, self.threads, self.peak_flops, self.keep_adapters)
        workers = [ctx.Process(target=_worker, args=args, daemon=True) for _ in range(n)]
        for w in workers:
            w.start()
        try:
            self._collect(specs, workers, results, on_result, progress)
        finally:
            for w in workers:
                if w.is_alive():
                    w.terminate()
                w.join()

    def _collect(self, specs, workers, results, on_result, progress) -> None:
        """Hand results to on_result as they arrive; runs of dead workers become failed."""
        left = {s.run_id: s for s in specs}
        started: set[str] = set()
        while left:
            try:
                kind, payload = results.get(timeout=_POLL_S)
            except queue.Empty:
                if any(w.is_alive() for w in workers):
                    continue
                for rid in list(left):  # every worker gone: nothing more will come
                    on_result(_lost(rid, rid in started))
                    del left[rid]
                return
            if kind == "started":
                started.add(payload.run_id)
                progress.run_started(payload)
            else:
                left.pop(payload.run_id, None)
                on_result(payload)


def _lost(run_id: str, started: bool) -> RunResult:
    what = "its worker process died" if started else "no worker process was left to run it"
    return RunResult(run_id=run_id, status="failed", error=f"WorkerLost: {what}")
