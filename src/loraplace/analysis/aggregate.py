"""Seeds to numbers: per-placement means with 95 % confidence intervals, and the baselines."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from loraplace.analysis.dist import t_ppf
from loraplace.analysis.read import TRAINED_KINDS, RunRecord, StudyData
from loraplace.errors import UserError, closest
from loraplace.metrics import EVAL_LOSS, FLOOR, RETAIN_LOSS, RETAIN_ZERO_SHOT_LOSS, ZERO_SHOT_LOSS

CONFIDENCE = 0.95
MIN_SEEDS = 3  # below this a CI is too wide to lean on; the report warns


@dataclass(frozen=True)
class Estimate:
    """Mean over seeds with the half-width of a two-sided 95 % t interval (None when n < 2)."""

    mean: float
    ci: float | None
    n: int
    values: tuple[float, ...]

    @property
    def low(self) -> float:
        return self.mean - (self.ci or 0.0)

    @property
    def high(self) -> float:
        return self.mean + (self.ci or 0.0)


def estimate(values: Iterable[float | None]) -> Estimate | None:
    """Mean and 95 % t-interval half-width of ``values``; None when there are none."""
    vals = tuple(float(v) for v in values if v is not None and math.isfinite(v))
    if not vals:
        return None
    n = len(vals)
    mean = float(np.mean(vals))
    if n < 2:
        return Estimate(mean, None, n, vals)
    sem = float(np.std(vals, ddof=1)) / math.sqrt(n)
    ci = t_ppf(0.5 + CONFIDENCE / 2, n - 1) * sem
    return Estimate(mean, ci, n, vals)


@dataclass(frozen=True)
class ZeroShot:
    """The base model without adaptation: eval loss per seed and where it came from."""

    loss: Estimate
    by_seed: dict[int, float]
    source: str  # "zero-shot runs" | "zero_shot_loss metric of the trained runs"
    floor: float | None
    retain_loss: float | None

    @property
    def ppl(self) -> float:
        return math.exp(self.loss.mean)


@dataclass
class PlacementSummary:
    """One placement aggregated over its finished (done) seeds."""

    placement: str
    kind: str
    runs: list[RunRecord]  # done runs only, in seed order
    loss: Estimate
    trainable_params: float | None
    total_params: float | None
    trainable_pct: float | None
    train_time: Estimate | None
    tokens_per_s: Estimate | None
    peak_mem_bytes: Estimate | None
    floor: float | None
    gap_closed: Estimate | None
    forgetting: Estimate | None
    loss_reduction: Estimate | None  # zero-shot loss minus run loss, nats
    rel_loss_vs_ref: float | None = None  # percent change of mean loss against the reference
    speedup_vs_ref: float | None = None  # reference train time / this train time
    not_counted: list[RunRecord] = field(default_factory=list)  # diverged, failed, ...

    @property
    def ppl(self) -> float:
        """Perplexity of the seed-mean token-weighted loss: exp(mean eval_loss)."""
        return math.exp(self.loss.mean)

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.runs)

    @property
    def loss_by_seed(self) -> dict[int, float]:
        return {r.seed: r.metrics[EVAL_LOSS] for r in self.runs}

    @property
    def reduction_vs_full(self) -> float | None:
        """How many times fewer parameters train than in full fine-tuning."""
        if not self.trainable_params or not self.total_params:
            return None
        return self.total_params / self.trainable_params

    def metric(self, name: str) -> Estimate | None:
        return estimate(r.metrics.get(name) for r in self.runs)


@dataclass
class Summary:
    """The study aggregated: trained placements, the zero-shot baseline, what was left out."""

    study: StudyData
    placements: list[PlacementSummary]
    zero_shot: ZeroShot | None
    reference: str | None
    excluded: list[RunRecord]  # every run that is not done, with its status
    warnings: list[str]

    def get(self, name: str) -> PlacementSummary:
        for p in self.placements:
            if p.placement == name:
                return p
        raise KeyError(name)

    @property
    def floor(self) -> float | None:
        vals = [p.floor for p in self.placements if p.floor is not None]
        if self.zero_shot and self.zero_shot.floor is not None:
            vals.append(self.zero_shot.floor)
        return float(np.mean(vals)) if vals else None

    @property
    def has_forgetting(self) -> bool:
        return any(p.forgetting is not None for p in self.placements)


def _loss_estimate(losses: Iterable[float]) -> Estimate:
    """estimate() of done runs' losses, never None: there is at least one, and a run whose
    final loss is not finite is stored as diverged, not done."""
    est = estimate(losses)
    if est is None:
        raise ValueError("no finite loss to aggregate")
    return est


def _first(runs: list[RunRecord], name: str) -> float | None:
    vals = [r.metrics[name] for r in runs if name in r.metrics]
    return float(np.mean(vals)) if vals else None


def _zero_shot(study: StudyData) -> ZeroShot | None:
    zs_runs = [r for r in study.runs if r.kind == "zero-shot" and r.done and EVAL_LOSS in r.metrics]
    if zs_runs:
        by_seed = {r.seed: r.metrics[EVAL_LOSS] for r in zs_runs}
        return ZeroShot(
            loss=_loss_estimate(by_seed.values()),
            by_seed=by_seed,
            source="zero-shot runs",
            floor=_first(zs_runs, FLOOR),
            retain_loss=_first(zs_runs, RETAIN_LOSS),
        )
    # No baseline run: the trained runs measured the base model on the same eval tokens.
    trained = [r for r in study.runs if r.kind in TRAINED_KINDS and r.done]
    measured: dict[int, list[float]] = {}
    for r in trained:
        if ZERO_SHOT_LOSS in r.metrics:
            measured.setdefault(r.seed, []).append(r.metrics[ZERO_SHOT_LOSS])
    if not measured:
        return None
    per_seed = {s: float(np.mean(v)) for s, v in measured.items()}
    return ZeroShot(
        loss=_loss_estimate(per_seed.values()),
        by_seed=per_seed,
        source="zero_shot_loss metric of the trained runs",
        floor=_first(trained, FLOOR),
        retain_loss=_first(trained, RETAIN_ZERO_SHOT_LOSS),
    )


def _zs_loss_for(run: RunRecord, zs: ZeroShot | None) -> float | None:
    """The base model's loss paired with this run: its own measurement, else the same seed's."""
    if ZERO_SHOT_LOSS in run.metrics:
        return run.metrics[ZERO_SHOT_LOSS]
    if zs is None:
        return None
    return zs.by_seed.get(run.seed, zs.loss.mean)


def _gap_closed(run: RunRecord, zs: ZeroShot | None) -> float | None:
    floor = run.metrics.get(FLOOR, zs.floor if zs else None)
    zs_loss = _zs_loss_for(run, zs)
    if floor is None or zs_loss is None or zs_loss - floor <= 0:
        return None
    return (zs_loss - run.metrics[EVAL_LOSS]) / (zs_loss - floor)


def _forgetting(run: RunRecord, zs: ZeroShot | None) -> float | None:
    after = run.metrics.get(RETAIN_LOSS)
    before = run.metrics.get(RETAIN_ZERO_SHOT_LOSS, zs.retain_loss if zs else None)
    if after is None or before is None:
        return None
    return after - before


def default_reference(placements: list[PlacementSummary]) -> str | None:
    """The placement with the most trainable parameters (ties: the first in study order)."""
    best, most = None, 0.0
    for p in placements:
        if p.trainable_params is None:
            continue
        if best is None or p.trainable_params > most:
            best, most = p, p.trainable_params
    return best.placement if best else (placements[0].placement if placements else None)


def summarize(study: StudyData, reference: str | None = None) -> Summary:
    """Aggregate a study over seeds; ``reference`` defaults to the largest placement."""
    zs = _zero_shot(study)
    warnings: list[str] = []
    summaries: list[PlacementSummary] = []
    for name in study.placements():
        runs = [r for r in study.runs if r.placement == name and r.kind in TRAINED_KINDS]
        done = sorted((r for r in runs if r.done and EVAL_LOSS in r.metrics), key=lambda r: r.seed)
        left_out = [r for r in runs if r not in done]
        if not done:
            continue
        summaries.append(
            PlacementSummary(
                placement=name,
                kind=done[0].kind,
                runs=done,
                loss=_loss_estimate(r.metrics[EVAL_LOSS] for r in done),
                trainable_params=_first(done, "trainable_params"),
                total_params=_first(done, "total_params"),
                trainable_pct=_first(done, "trainable_pct"),
                train_time=estimate(r.metrics.get("train_time_s") for r in done),
                tokens_per_s=estimate(r.metrics.get("tokens_per_s") for r in done),
                peak_mem_bytes=estimate(r.metrics.get("peak_mem_bytes") for r in done),
                floor=_first(done, FLOOR),
                gap_closed=estimate(_gap_closed(r, zs) for r in done),
                forgetting=estimate(_forgetting(r, zs) for r in done),
                loss_reduction=estimate(
                    (z - r.metrics[EVAL_LOSS]) if (z := _zs_loss_for(r, zs)) is not None else None
                    for r in done
                ),
                not_counted=left_out,
            )
        )
    names = [p.placement for p in summaries]
    if reference is not None and reference not in names:
        known = ", ".join(names) or "none"
        raise UserError(
            f"--reference {reference!r} is not a placement with finished runs in this study"
            f"{closest(reference, names)}; choose one of: {known}"
        )
    ref = reference or default_reference(summaries)
    if ref is not None:
        r = next(p for p in summaries if p.placement == ref)
        for p in summaries:
            p.rel_loss_vs_ref = 100.0 * (p.loss.mean - r.loss.mean) / r.loss.mean
            if p.train_time and r.train_time and p.train_time.mean > 0:
                p.speedup_vs_ref = r.train_time.mean / p.train_time.mean
    few = [p.placement for p in summaries if p.loss.n < MIN_SEEDS]
    if few:
        warnings.append(
            f"fewer than {MIN_SEEDS} finished seeds for: {', '.join(few)}; their confidence "
            "intervals and tests are unreliable (add seeds to the study)"
        )
    excluded = [r for r in study.runs if not r.done]
    return Summary(study, summaries, zs, ref, excluded, warnings)
