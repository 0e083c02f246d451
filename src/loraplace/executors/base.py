"""The executor interface: RunSpecs in, RunResults out to the driver's callback.

An executor moves specs to wherever runs execute (this process, a Ray cluster) and hands
each RunResult to ``on_result`` as it arrives; the driver's callback alone writes the
store. Progress goes to a ``RunProgress`` so every executor shows the same display.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from loraplace.runs import RunResult, RunSpec

ResultCallback = Callable[[RunResult], None]


class RunProgress(Protocol):
    """Events an executor reports while it works (the driver implements this)."""

    def run_started(self, spec: RunSpec) -> None:
        """A run began executing (the driver marks it ``running``)."""

    def step(self, spec: RunSpec, step: int, steps: int, loss: float, tokens_per_s: float) -> None:
        """One optimizer step finished; executors may throttle these."""


class NullProgress:
    """A RunProgress that ignores every event."""

    def run_started(self, spec: RunSpec) -> None:
        pass

    def step(self, spec: RunSpec, step: int, steps: int, loss: float, tokens_per_s: float) -> None:
        pass


class Executor(Protocol):
    """Runs specs and reports each result as it finishes."""

    def run(
        self,
        specs: Sequence[RunSpec],
        on_result: ResultCallback,
        progress: RunProgress | None = None,
    ) -> None:
        """Execute every spec; call ``on_result`` once per spec, in completion order.

        A KeyboardInterrupt propagates to the caller; runs without a result by then are
        the caller's to mark ``interrupted``.
        """
        ...
