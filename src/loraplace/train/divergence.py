"""When a run's numbers must not count: it diverged, or it ended worse than zero-shot.

Divergence is checked at every optimizer step, on the train loss of that step:
- a loss that is not finite (NaN, inf);
- a spike: one step's loss above ``diverge_factor`` (4) times the first step's loss;
- a rise: the smoothed train loss (an exponential moving average, weight 0.9 on the past,
  so about the last ten steps) above ``diverge_rise`` (1.5) times the first step's loss.
  A fine-tuned model starts near its best loss on the data it has seen, so a smoothed
  loss half as high again is a run that is being pushed away, not learning.
A diverged run is stored without numbers.

A run that trains to the end but whose final eval loss is above the zero-shot model's on
the same eval tokens is stored ``flagged``: its numbers are kept, shown apart, and never
averaged. Training that makes a model worse than not training at all says something is
wrong (a learning rate too high, a bug), not which placement is better.
"""

from __future__ import annotations

import math

from loraplace.runs import TrainSettings

SMOOTHING = 0.9  # weight of the past in the smoothed train loss
# A final eval loss this much (relative) above zero-shot counts as worse; below it, equal
# numbers (lr 0, or an adapter that did not move) are not flagged by rounding noise.
WORSE_TOLERANCE = 1e-6


class Diverged(Exception):
    def __init__(self, step: int, loss: float, why: str | None = None):
        super().__init__(why or f"loss {loss} at step {step}")
        self.step = step
        self.loss = loss


class LossWatch:
    """Feed it each step's train loss; it raises Diverged when the run is blowing up."""

    def __init__(self, t: TrainSettings):
        self.factor = t.diverge_factor
        self.rise = t.diverge_rise
        self.start: float | None = None
        self.smoothed: float | None = None

    def check(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            raise Diverged(step, loss)
        if self.start is None or self.smoothed is None:
            self.start = self.smoothed = loss
            return
        self.smoothed = SMOOTHING * self.smoothed + (1 - SMOOTHING) * loss
        if loss > self.factor * self.start:
            raise Diverged(
                step, loss, f"loss {loss:.4f} at step {step}, over {self.factor:g}x its start"
            )
        if self.smoothed > self.rise * self.start:
            raise Diverged(
                step,
                loss,
                f"smoothed train loss {self.smoothed:.4f} at step {step}, over "
                f"{self.rise:g}x its start {self.start:.4f}",
            )


def worse_than_zero_shot(eval_loss: float, zero_shot_loss: float | None) -> str | None:
    """The flag's note when the final eval loss is above zero-shot's, else None."""
    if zero_shot_loss is None or not eval_loss > zero_shot_loss * (1 + WORSE_TOLERANCE):
        return None
    return (
        f"worse than zero-shot: eval loss {eval_loss:.4f} > zero-shot {zero_shot_loss:.4f} "
        "(learning rate too high, or a bug)"
    )
