"""Successive halving over a study's grid: the rung schedule and who survives a rung.

``select: {by: eval_loss, prune: halving, rungs: R, reduction: η}`` trains every grid
point of every placement to the first rung, keeps the best ``1/η`` of each placement's
settings by the validation metric's mean over seeds, continues those to the next rung,
and so on; the survivors of the last rung train to the end. Rung ``k`` (0-based) of a
run of ``S`` steps sits at ``ceil(S / η^(R-k))`` steps, so with ``S = 120, R = 2,
η = 3`` the rungs are at 14 and 40 steps. The rest is the standard algorithm (Jamieson &
Talwalkar 2016; Optuna's ``SuccessiveHalvingPruner`` spaces its rungs the same way, by
factors of η, but decides per trial as trials arrive rather than per placement).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def rung_steps(total: int, rungs: int, reduction: int) -> list[int]:
    """The optimizer steps at which each rung judges, increasing, all below ``total``.

    Rungs that would coincide (or reach ``total``) on a short run are merged away.
    """
    out: list[int] = []
    for k in range(rungs):
        step = math.ceil(total / reduction ** (rungs - k))
        if 0 < step < total and (not out or step > out[-1]):
            out.append(step)
    return out


def keep_count(n: int, reduction: int) -> int:
    """How many of ``n`` settings survive a rung: the best ``1/η``, at least one."""
    return max(1, math.ceil(n / reduction))


def survivors(
    scores: Mapping[str, Sequence[float]], reduction: int, goal: str = "min"
) -> list[str]:
    """The settings (labels) that continue past a rung, in their given order.

    scores: label -> the validation metric of each of its seeds at this rung. A label
        with no score (every seed diverged) never survives. Ties go to the earlier label.
    """
    sign = 1.0 if goal == "min" else -1.0
    ranked = [
        (sign * sum(v) / len(v), i, label)
        for i, (label, v) in enumerate(scores.items())
        if len(v) > 0
    ]
    ranked.sort()
    kept = {label for _, _, label in ranked[: keep_count(len(scores), reduction)]}
    return [label for label in scores if label in kept]
