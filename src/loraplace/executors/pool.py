"""Runs side by side on one machine: worker processes, each an in-process executor.

A small model keeps two CPU cores poorly busy from one process: its matrices are too small
for torch's intra-op threads to pay. Two processes of one thread each, every one training
whole runs, use the cores better (measured in ``benchmarks/RESULTS.md``). Each worker loads
the base model once and keeps it between runs, as ``LocalExecutor`` does in-process.

Workers start with ``spawn`` (no fork of a process that already holds torch's thread pools)
and ignore Ctrl-C: the driver alone handles an interrupt, stops the workers and marks the
runs in flight ``interrupted``. Progress comes back on a queue: a ``started`` event when a
worker takes a run (the driver then marks it ``running``) and at most two ``step`` events a
second per run.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from loraplace.executors.base import NullProgress, ResultCallback, RunProgress
from loraplace.runs import RunResult, RunSpec

STEP_EVERY_S = 0.5  # the most often a worker reports a run's step

_worker: dict[str, Any] = {}  # this worker process's executor and event queue


def _init_worker(threads: int, peak_flops: float | None, keep: bool, events: Any) -> None:
    import torch

    from loraplace.executors.local import LocalExecutor

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C
    torch.set_num_threads(threads)
    _worker["executor"] = LocalExecutor(peak_flops=peak_flops, keep_adapters=keep)
    _worker["events"] = events


class _QueueProgress(NullProgress):
    """Sends a run's steps to the driver, throttled."""

    def __init__(self, events: Any):
        self.events = events
        self.last = 0.0

    def step(self, spec: RunSpec, step: int, steps: int, loss: float, tokens_per_s: float) -> None:
        now = time.monotonic()
        if now - self.last >= STEP_EVERY_S or step == steps:
            self.last = now
            self.events.put(("step", spec.run_id, step, steps, loss, tokens_per_s))


def _run_in_worker(spec: RunSpec) -> RunResult:
    events = _worker["events"]
    events.put(("started", spec.run_id))
    result = _worker["executor"].run_one(spec, _QueueProgress(events))
    result.manifest.setdefault("worker", {"executor": "pool", "pid": os.getpid()})
    return result


class PoolExecutor:
    """``workers`` processes of ``threads`` torch threads each; results in completion order."""

    def __init__(
        self,
        workers: int,
        threads: int = 1,
        peak_flops: float | None = None,
        keep_adapters: bool = True,
    ):
        self.workers = workers
        self.threads = threads
        self.peak_flops = peak_flops
        self.keep_adapters = keep_adapters

    def run(
        self,
        specs: Sequence[RunSpec],
        on_result: ResultCallback,
        progress: RunProgress | None = None,
    ) -> None:
        if not specs:
            return
        progress = progress or NullProgress()
        ctx = mp.get_context("spawn")
        events = ctx.Queue()
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(specs)),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(self.threads, self.peak_flops, self.keep_adapters, events),
        )
        try:
            futures = {pool.submit(_run_in_worker, spec): spec for spec in specs}
            _collect(futures, events, on_result, progress)
        except BaseException:
            _stop(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            events.close()


def _collect(
    futures: dict[Future, RunSpec], events: Any, on_result: ResultCallback, progress: RunProgress
) -> None:
    """Relays events and hands each result to ``on_result`` until every run has one."""
    by_id = {spec.run_id: spec for spec in futures.values()}
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        _relay(events, by_id, progress)
        for future in done:
            on_result(_result(future, futures[future]))
    _relay(events, by_id, progress)


def _relay(events: Any, by_id: dict[str, RunSpec], progress: RunProgress) -> None:
    while True:
        try:
            event = events.get_nowait()
        except queue.Empty:
            return
        spec = by_id[event[1]]
        if event[0] == "started":
            progress.run_started(spec)
        else:
            progress.step(spec, *event[2:])


def _result(future: Future, spec: RunSpec) -> RunResult:
    try:
        return future.result()
    except BrokenProcessPool as exc:  # a worker died (killed, out of memory)
        error = f"the worker process running it died ({exc})"
    except Exception as exc:  # the result could not come back (say, not picklable)
        error = f"{type(exc).__name__}: {exc}"
    return RunResult(run_id=spec.run_id, status="failed", error=error.splitlines()[0])


def _stop(pool: ProcessPoolExecutor) -> None:
    """Ends the workers now: their runs are the caller's to mark interrupted."""
    for process in list(getattr(pool, "_processes", {}).values()):
        if process.is_alive():
            process.terminate()
