"""The learning-rate schedule shared by fine-tuning runs and the built-ins' pretraining."""

from __future__ import annotations

import math


def scheduled_lr(
    step: int,
    *,
    lr: float,
    warmup: int,
    steps: int,
    schedule: str = "cosine",
    min_frac: float = 0.0,
) -> float:
    """Learning rate at optimizer step ``step`` (0-based): linear warm-up over ``warmup``
    steps, then ``schedule`` ("cosine", "linear" or "constant") down to ``min_frac * lr``
    at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    progress = (step - warmup) / max(1, steps - warmup)
    shape = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr * (min_frac + (1.0 - min_frac) * shape)
