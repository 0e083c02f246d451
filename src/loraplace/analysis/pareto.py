"""Efficiency against quality: Pareto fronts, efficiency ratios, and budget guidelines."""

from __future__ import annotations

from dataclasses import dataclass

from loraplace.analysis.aggregate import PlacementSummary, Summary
from loraplace.analysis.stats import PairedTest, find_test


@dataclass(frozen=True)
class Point:
    placement: str
    x: float  # the cost (trainable params, train seconds, forgetting in nats)
    y: float  # the loss to minimise (or negated gain)


def pareto_front(points: list[Point]) -> list[Point]:
    """The points no other point beats on both x and y (both minimised), by increasing x."""
    front: list[Point] = []
    for p in sorted(points, key=lambda q: (q.x, q.y)):
        if not front or p.y < front[-1].y:
            front.append(p)
    return front


def _points(placements: list[PlacementSummary], axis: str) -> list[Point]:
    pts = []
    for p in placements:
        if axis == "params" and p.trainable_params is not None:
            pts.append(Point(p.placement, p.trainable_params, p.loss.mean))
        elif axis == "time" and p.train_time is not None:
            pts.append(Point(p.placement, p.train_time.mean, p.loss.mean))
        elif axis == "forgetting" and p.forgetting is not None:
            pts.append(Point(p.placement, p.forgetting.mean, p.loss.mean))
    return pts


@dataclass(frozen=True)
class Front:
    """All points of one trade-off and the Pareto-optimal subset."""

    axis: str  # params | time | forgetting
    points: list[Point]
    front: list[Point]

    def on_front(self, placement: str) -> bool:
        return any(p.placement == placement for p in self.front)


def fronts(summary: Summary) -> dict[str, Front]:
    """Fronts over (trainable params, loss), (train time, loss) and, if measured, forgetting."""
    out = {}
    for axis in ("params", "time", "forgetting"):
        pts = _points(summary.placements, axis)
        if pts:
            out[axis] = Front(axis, pts, pareto_front(pts))
    return out


@dataclass(frozen=True)
class Efficiency:
    """Loss reduction against zero-shot, per million trainable params and per train second."""

    placement: str
    reduction: float  # nats, seed mean
    per_mparam: float | None
    per_second: float | None


def efficiency(summary: Summary) -> list[Efficiency]:
    out = []
    for p in summary.placements:
        if p.loss_reduction is None:
            continue
        red = p.loss_reduction.mean
        per_m = red / (p.trainable_params / 1e6) if p.trainable_params else None
        per_s = red / p.train_time.mean if p.train_time and p.train_time.mean > 0 else None
        out.append(Efficiency(p.placement, red, per_m, per_s))
    return out


@dataclass(frozen=True)
class Guideline:
    """Best placement for budgets from ``budget`` up to (not including) the next tier."""

    axis: str  # params | time
    budget: float  # the smallest budget at which this placement is affordable
    placement: str
    loss: float
    step_test: PairedTest | None  # against the previous (cheaper) tier, if any


def guidelines(summary: Summary, tests: list[PairedTest]) -> list[Guideline]:
    """One tier per point of the params and time fronts, with the test against the tier below."""
    out: list[Guideline] = []
    for axis, front in fronts(summary).items():
        if axis == "forgetting":
            continue
        prev: str | None = None
        for pt in front.front:
            step = find_test(tests, prev, pt.placement) if prev else None
            out.append(Guideline(axis, pt.x, pt.placement, pt.y, step))
            prev = pt.placement
    return out
