"""What a probe stored: the score names, their meaning, and one model's scores per (layer, role).

Reading a stored probe (the report, ``recommend``, generated placements) needs only this
module, never torch; computing the scores is ``scores.py``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

from loraplace.arch import ROLES
from loraplace.errors import UserError

Key = tuple[int, str]
Per = Literal["lora", "weight"] | None


@dataclass(frozen=True)
class ScoreInfo:
    """What a score measures and which way it points."""

    description: str
    higher_is_important: bool = True
    # Grows with the module's size, so dividing by its LoRA parameters is meaningful
    # (a sum or norm over the weights); False for ratios and per-coordinate means.
    extensive: bool = True


SCORES: dict[str, ScoreInfo] = {
    "taylor": ScoreInfo("sum |w * grad w| over the weight (first-order Taylor)"),
    "lora_grad": ScoreInfo("expected |grad B| of a fresh rank-1 LoRA (B=0, PEFT's A)"),
    "nfn": ScoreInfo("PLoP normalised feature norm: mean |W z^| / |W u|", False, extensive=False),
    "out_norm": ScoreInfo("RMS of the module output Wz (bias excluded)", extensive=False),
}


@dataclass
class ProbeResult:
    """Scores of every (layer, role) of one model on one dataset."""

    # score name -> (layer, role) -> value
    scores: dict[str, dict[Key, float]]
    modules: dict[Key, list[str]]  # full module names under each key
    weight_params: dict[Key, int]  # in x out, summed over the key's modules
    lora_params_per_rank: dict[Key, int]  # in + out, summed over the key's modules
    meta: dict = field(default_factory=dict)  # model, dataset, seed, batches, tokens, seconds

    @property
    def keys(self) -> list[Key]:
        order = {r: i for i, r in enumerate(ROLES)}
        return sorted(self.modules, key=lambda k: (k[0], order.get(k[1], len(order)), k[1]))

    @property
    def layers(self) -> list[int]:
        return sorted({k[0] for k in self.modules})

    @property
    def roles(self) -> list[str]:
        present = {k[1] for k in self.modules}
        return [r for r in ROLES if r in present]

    def importance(self, score: str) -> dict[Key, float]:
        """The score oriented so that higher means 'adapt here' (nfn is inverted)."""
        values = self._get(score)
        if SCORES.get(score, ScoreInfo("")).higher_is_important:
            return dict(values)
        return {k: (1.0 / v if v > 0 else math.inf) for k, v in values.items()}

    def grid(self, score: str) -> dict[int, dict[str, float]]:
        """layer -> role -> value (a layer x role table)."""
        out: dict[int, dict[str, float]] = {}
        for (layer, role), v in self._get(score).items():
            out.setdefault(layer, {})[role] = v
        return {k: out[k] for k in sorted(out)}

    def role_summary(self, score: str, *, per: Per = None) -> dict[str, float]:
        """Mean over layers of each role's score.

        Args:
            per: None for the raw score; "lora" divides each (layer, role) by its LoRA
                parameters per rank (in + out: the allocation's currency, so this is the
                score a rank buys); "weight" by its weight count (in x out). Both suit
                scores that add up over a module's weights (taylor); for ratios (nfn)
                use the raw mean.
        """
        if per not in (None, "lora", "weight"):
            raise UserError(f"unknown normalisation {per!r}: use none, lora or weight")
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for k, v in self._get(score).items():
            if per == "lora":
                v = v / self.lora_params_per_rank[k]
            elif per == "weight":
                v = v / self.weight_params[k]
            sums[k[1]] += v
            counts[k[1]] += 1
        return {r: sums[r] / counts[r] for r in self.roles if counts[r]}

    def role_ranking(self, score: str, *, per: Per = None) -> list[str]:
        """Roles from most to least important by the mean over layers (see role_summary)."""
        summary = self.role_summary(score, per=per)
        sign = -1.0 if SCORES.get(score, ScoreInfo("")).higher_is_important else 1.0
        return sorted(summary, key=lambda r: (sign * summary[r], r))

    def to_frame(self):
        """A long pandas DataFrame: one row per (score, layer, role)."""
        import pandas as pd

        rows = [
            {
                "score": name,
                "layer": k[0],
                "role": k[1],
                "value": values[k],
                "weight_params": self.weight_params[k],
                "lora_params_per_rank": self.lora_params_per_rank[k],
                "modules": ",".join(self.modules[k]),
            }
            for name, values in self.scores.items()
            for k in self.keys
            if k in values
        ]
        return pd.DataFrame(rows)

    def to_json(self) -> dict:
        return {
            "meta": self.meta,
            "scores": {
                name: {f"{k[0]}:{k[1]}": v for k, v in values.items()}
                for name, values in self.scores.items()
            },
            "orientation": {
                name: ("higher" if SCORES[name].higher_is_important else "lower")
                for name in self.scores
                if name in SCORES
            },
            "modules": [
                {
                    "layer": k[0],
                    "role": k[1],
                    "names": self.modules[k],
                    "weight_params": self.weight_params[k],
                    "lora_params_per_rank": self.lora_params_per_rank[k],
                }
                for k in self.keys
            ],
            "role_ranking": {name: self.role_ranking(name) for name in self.scores},
            "role_ranking_per_lora_param": {
                name: self.role_ranking(name, per="lora")
                for name in self.scores
                if SCORES.get(name, ScoreInfo("")).extensive
            },
        }

    @classmethod
    def from_json(cls, data: dict) -> ProbeResult:
        def key(s: str) -> Key:
            layer, _, role = s.partition(":")
            return int(layer), role

        mods = {(m["layer"], m["role"]): m for m in data["modules"]}
        return cls(
            scores={
                name: {key(k): float(v) for k, v in values.items()}
                for name, values in data["scores"].items()
            },
            modules={k: list(m["names"]) for k, m in mods.items()},
            weight_params={k: int(m["weight_params"]) for k, m in mods.items()},
            lora_params_per_rank={k: int(m["lora_params_per_rank"]) for k, m in mods.items()},
            meta=dict(data.get("meta", {})),
        )

    def _get(self, score: str) -> dict[Key, float]:
        if score not in self.scores:
            raise UserError(f"unknown score {score!r}: this probe has {', '.join(self.scores)}")
        return self.scores[score]
