"""Successive halving over a grid: run every setting to a rung, continue only the best.

Wraps the in-process executor. At each rung (``study/halving.py`` places them) every
still-live run trains up to the rung's step and stops there (``paused``, with a
checkpoint, see ``train/pause.py``); then, per (task, placement), the settings are ranked
by the mean over seeds of their validation loss at that step, and all but the best
``1/η`` are stored as ``pruned`` with their partial curves. The survivors continue from
their checkpoints, and after the last rung train to the end (``done``).

Every decision is recomputed from the runs' stored eval curves, so a study stopped at
any moment and run again continues the rung where it stopped: runs that reached the rung
are not touched, a run stopped between rungs continues from its last checkpoint, and no
finished, paused or pruned step is trained again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loraplace.executors.base import NullProgress, ResultCallback, RunProgress
from loraplace.metrics import EVAL_LOSS
from loraplace.runs import RunResult, RunSpec
from loraplace.study.halving import survivors
from loraplace.train.pause import Pause

FINISHED = ("done", "diverged", "flagged")  # trained to the end, or stopped by divergence


@dataclass
class Record:
    """What the store holds of one run: enough to decide its rungs again."""

    status: str = "pending"
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def eval_at(self, step: int) -> float | None:
        return dict(self.curves.get(EVAL_LOSS, [])).get(step)

    def reached(self, step: int) -> bool:
        """Whether this run needs no more training to be judged at ``step``."""
        if self.status in FINISHED:
            return True
        if self.status in ("paused", "pruned"):
            return self.metrics.get("rung_steps", -1) >= step
        return False


class HalvingExecutor:
    """Runs a grid study rung by rung through ``inner.run_one`` (the local executor)."""

    def __init__(
        self,
        inner,
        specs: Sequence[RunSpec],
        rungs: list[int],
        *,
        reduction: int,
        records: dict[str, Record],
        checkpoints: Path,
        goal: str = "min",
    ):
        self.inner = inner
        self.specs = [s for s in specs if s.kind != "zero-shot"]
        self.baselines = [s for s in specs if s.kind == "zero-shot"]
        self.rungs = rungs
        self.reduction = reduction
        self.records = records
        self.checkpoints = checkpoints
        self.goal = goal

    def pause(self, spec: RunSpec, stop_at: int | None) -> Pause:
        return Pause(self.checkpoints / f"{spec.run_id}.pt", stop_at)

    def run(
        self,
        specs: Sequence[RunSpec],
        on_result: ResultCallback,
        progress: RunProgress | None = None,
    ) -> None:
        progress = progress or NullProgress()
        todo = {s.run_id for s in specs}

        def run(spec: RunSpec, stop_at: int | None) -> None:
            progress.run_started(spec)
            result = self.inner.run_one(spec, progress, pause=self.pause(spec, stop_at))
            self._record(result)
            if result.status != "paused":
                self.pause(spec, None).discard()
            on_result(result)

        for spec in self.baselines:  # zero-shot: one evaluation, no rungs
            if spec.run_id in todo:
                run(spec, None)
        live = list(self.specs)
        for rung in self.rungs:
            for spec in live:
                if not self.records.setdefault(spec.run_id, Record()).reached(rung):
                    run(spec, rung)
            live = self._judge(live, rung, on_result)
        for spec in live:
            if self.records[spec.run_id].status not in FINISHED:
                run(spec, None)

    def _record(self, result: RunResult) -> None:
        rec = self.records.setdefault(result.run_id, Record())
        rec.status, rec.curves, rec.metrics = result.status, result.curves, result.metrics

    def _judge(self, live: list[RunSpec], rung: int, on_result: ResultCallback) -> list[RunSpec]:
        """Keep the best settings of each (model, task, placement) at ``rung``; prune the
        rest (models never judge each other's settings: their losses differ in scale)."""
        groups: dict[tuple, dict[str, list[RunSpec]]] = {}
        for spec in live:
            key = (spec.model, spec.task, spec.placement_base or spec.placement_name)
            groups.setdefault(key, {}).setdefault(spec.placement_name, []).append(spec)
        kept: list[RunSpec] = []
        for settings in groups.values():
            scores = {
                label: [v for s in runs if (v := self.records[s.run_id].eval_at(rung)) is not None]
                for label, runs in settings.items()
            }
            best = set(survivors(scores, self.reduction, self.goal))
            for label, runs in settings.items():
                if label in best:
                    kept.extend(runs)
                    continue
                for spec in runs:
                    self._prune(spec, rung, on_result)
        return [s for s in live if s in kept]

    def _prune(self, spec: RunSpec, rung: int, on_result: ResultCallback) -> None:
        rec = self.records[spec.run_id]
        if rec.status == "pruned" or rec.status in FINISHED:  # a finished run stays as it is
            return
        loss = rec.eval_at(rung)
        result = RunResult(
            run_id=spec.run_id,
            status="pruned",
            metrics={"rung_eval_loss": loss, "rung_steps": rung} if loss is not None else {},
            curves=rec.curves,
            error=f"pruned at step {rung} by successive halving (reduction {self.reduction})",
        )
        self._record(result)
        self.pause(spec, None).discard()
        on_result(result)
