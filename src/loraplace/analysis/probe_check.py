"""Probes against training: do the scores taken before training rank roles as training does?

The study's probe (stored at plan time) gives each role a score: the mean over layers of
its (layer, role) scores, per LoRA parameter for scores that add up over a module's
weights (taylor, lora_grad: the allocation's currency) and raw for ratios (nfn,
out_norm), oriented so that higher means "adapt here". Training gives each role the loss
reduction (zero-shot minus eval loss, mean over seeds) of the study's *single-role*
placement: one that adapts that role, and only it, on every layer. With an equal budget
for the single-role placements, both are "value per parameter". Spearman's rho between
the two over the roles that have both says how far the probe can be trusted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loraplace.analysis.aggregate import Estimate, Summary
from loraplace.probe.result import SCORES, ProbeResult, ScoreInfo


@dataclass(frozen=True)
class RoleRow:
    role: str
    placement: str | None  # the single-role placement measuring it, if any
    trained_gain: Estimate | None  # zero-shot minus eval loss, nats
    scores: dict[str, float]  # score name -> oriented role score


@dataclass
class ProbeCheck:
    meta: dict
    roles: list[RoleRow]
    rho: dict[str, float | None]  # score -> Spearman rho with the trained gains
    per_lora: dict[str, bool]  # score -> normalised per LoRA parameter

    @property
    def n_trained(self) -> int:
        return sum(1 for r in self.roles if r.trained_gain is not None)

    def ranking(self, score: str | None) -> list[str]:
        """Roles by a score (None: by trained gain), best first; roles without it last."""
        if score is None:
            vals = {r.role: r.trained_gain.mean for r in self.roles if r.trained_gain}
        else:
            vals = {r.role: r.scores[score] for r in self.roles if score in r.scores}
        return sorted(vals, key=lambda k: (-vals[k], k))


def _single_role(s: Summary, probe_layers: dict[str, set[int]]) -> dict[str, str]:
    """role -> the first placement adapting exactly that role on all its layers."""
    out: dict[str, str] = {}
    for p in s.placements:
        if p.kind != "lora" or not p.runs:
            continue
        mods = p.runs[0].modules
        roles = {m.get("role") for m in mods}
        if len(roles) != 1:
            continue
        role = str(next(iter(roles)))
        layers = {m.get("layer") for m in mods}
        if role in probe_layers and layers == probe_layers[role]:
            out.setdefault(role, p.placement)
    return out


def probe_check(s: Summary) -> ProbeCheck | None:
    """The check, or None when the study stored no probe."""
    data = s.study.probe
    if not data:
        return None
    from scipy.stats import spearmanr  # 0.4 s to import: only studies with probes pay it

    probe = ProbeResult.from_json(data)
    layers: dict[str, set[int]] = {}
    for layer, role in probe.keys:
        layers.setdefault(role, set()).add(layer)
    single = _single_role(s, layers)
    names = [n for n in SCORES if n in probe.scores] + [n for n in probe.scores if n not in SCORES]
    per_lora = {n: SCORES.get(n, ScoreInfo("")).extensive for n in names}
    role_scores: dict[str, dict[str, float]] = {}
    for name in names:
        summary = probe.role_summary(name, per="lora" if per_lora[name] else None)
        higher = SCORES.get(name, ScoreInfo("")).higher_is_important
        for role, v in summary.items():
            oriented = v if higher else (1.0 / v if v > 0 else math.inf)
            role_scores.setdefault(role, {})[name] = oriented
    rows = []
    for role in probe.roles:
        placement = single.get(role)
        gain = s.get(placement).loss_reduction if placement else None
        rows.append(RoleRow(role, placement, gain, role_scores.get(role, {})))
    rho: dict[str, float | None] = {}
    trained = [r for r in rows if r.trained_gain is not None]
    for name in names:
        xs = [r.scores.get(name) for r in trained]
        ys = [r.trained_gain.mean for r in trained]  # type: ignore[union-attr]
        if len(trained) < 3 or any(x is None or not math.isfinite(x) for x in xs):
            rho[name] = None
            continue
        res = spearmanr(xs, ys)
        rho[name] = float(res.statistic) if math.isfinite(res.statistic) else None
    return ProbeCheck(dict(probe.meta), rows, rho, per_lora)
