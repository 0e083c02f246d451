"""The in-process executor: one base model per process, adapters swapped between runs.

What it keeps between runs (model, blocks, zero-shot evaluations) is ``loraplace.assets``.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence

from loraplace.assets import Assets
from loraplace.errors import UserError
from loraplace.executors.base import NullProgress, ResultCallback, RunProgress
from loraplace.runs import RunResult, RunSpec
from loraplace.train import train_run
from loraplace.train.pause import Pause

__all__ = ["Assets", "LocalExecutor"]


class LocalExecutor:
    """Runs specs one after another in this process."""

    def __init__(
        self,
        assets: Assets | None = None,
        peak_flops: float | None = None,
        keep_adapters: bool = True,
    ):
        self.assets = assets or Assets()
        self.peak_flops = peak_flops  # FLOP/s for MFU; measured when None
        self.keep_adapters = keep_adapters  # return trained adapters for the driver to save

    def run(
        self,
        specs: Sequence[RunSpec],
        on_result: ResultCallback,
        progress: RunProgress | None = None,
    ) -> None:
        progress = progress or NullProgress()
        for spec in specs:
            progress.run_started(spec)
            on_result(self.run_one(spec, progress))

    def run_one(
        self, spec: RunSpec, progress: RunProgress | None = None, pause: Pause | None = None
    ) -> RunResult:
        """One run; a failure becomes a ``failed`` result, an interrupt propagates.

        pause: continue from / stop at a rung (successive halving, ``train/pause.py``).
        """
        progress = progress or NullProgress()
        try:
            model, tokenizer = self.assets.model(
                spec.model, spec.train.device, spec.quantize, spec.train.precision
            )
            blocks = self.assets.spec_blocks(spec)
            return train_run(
                spec,
                model,
                blocks,
                retain=self.assets.retain_blocks(spec),
                test=self.assets.test_blocks(spec),
                baseline=self.assets.baseline(spec),
                on_step=lambda s, n, loss, tps: progress.step(spec, s, n, loss, tps),
                peak_flops=self.peak_flops,
                keep_adapter=self.keep_adapters,
                tokenizer=tokenizer,
                pause=pause,
            )
        except (UserError, Exception) as exc:  # a bug in one run must not end the study
            detail = str(exc) if isinstance(exc, UserError) else traceback.format_exc()
            return RunResult(
                run_id=spec.run_id,
                status="failed",
                error=f"{type(exc).__name__}: {exc}".splitlines()[0],
                manifest={"traceback": detail},
            )
