"""Stopping a run at a rung and continuing it later, exactly where it stopped.

Successive halving trains every grid point to a rung, then continues only the best. A
continued run must be the same run it would have been without the stop, and no step may
be trained twice, so a stop saves what the next steps depend on: the trainable weights,
AdamW's moments, the curves so far, the train time, the divergence watch's reference
and smoothed loss, and torch's RNG state. The batch order and learning rate follow from the seed
and the step, so a continued run draws and skips the batches it already trained on.
The file is written to a temporary name and renamed, so a crash leaves the previous one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


class Paused(Exception):
    """A run reached its stop step: the checkpoint is written, the rung evaluated."""

    def __init__(self, step: int, eval_loss: float):
        super().__init__(f"paused at step {step} (eval loss {eval_loss:.4f})")
        self.step = step
        self.eval_loss = eval_loss


@dataclass(frozen=True)
class Pause:
    """Where a run's checkpoint lives, and the step to stop at (None: train to the end)."""

    path: Path
    stop_at: int | None = None

    def resume(self, net: torch.nn.Module, opt, curves: dict, watch) -> tuple[int, float]:
        """Load the checkpoint if there is one: (first step to train, train time so far).

        watch: the run's ``LossWatch``, given back its reference and smoothed loss.
        """
        if not self.path.is_file():
            return 0, 0.0
        state = torch.load(self.path, weights_only=True)
        params = dict(net.named_parameters())
        with torch.no_grad():
            for name, value in state["params"].items():
                params[name].copy_(value)
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        for name, points in state["curves"].items():
            curves[name] = [(int(s), float(v)) for s, v in points]
        watch.start, watch.smoothed = state["watch"]
        return int(state["step"]), float(state["train_time"])

    def save(
        self,
        net: torch.nn.Module,
        opt,
        curves: dict,
        watch,
        *,
        step: int,
        train_time: float,
    ) -> None:
        state: dict[str, Any] = {
            "step": step,
            "params": {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad},
            "optimizer": opt.state_dict(),
            "rng": torch.get_rng_state(),
            "curves": {k: [list(p) for p in v] for k, v in curves.items()},
            "train_time": train_time,
            "watch": [watch.start, watch.smoothed],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".tmp-{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def discard(self) -> None:
        """Remove the checkpoint once the run is finished or pruned."""
        self.path.unlink(missing_ok=True)
