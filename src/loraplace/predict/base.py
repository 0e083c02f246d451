"""What every predictor takes and returns: candidates in, a ranking and its cost out.

A predictor answers "which of these placements will train best?" without running the
study. It takes the context (model, data and budget, with the study's train settings for
the predictors that train) and the candidate placements, and returns them ranked best
first with its own wall-clock cost in seconds. Scores are oriented higher = better, so
one sort serves every predictor; ties go to the label, so a ranking is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loraplace.errors import UserError, closest

Key = tuple[int, str]


def module_params(m: dict[str, Any]) -> int:
    """LoRA parameters of one resolved module: rank x (in + out)."""
    return int(m["rank"]) * (int(m["in_features"]) + int(m["out_features"]))


@dataclass(frozen=True)
class Candidate:
    """One placement to rank: its label and resolved modules (as a run spec stores them)."""

    label: str
    modules: tuple[dict[str, Any], ...]
    use_rslora: bool = False

    @property
    def units(self) -> set[Key]:
        """The (layer, role)s it adapts."""
        return {
            (int(m["layer"]), str(m["role"])) for m in self.modules if m.get("layer") is not None
        }

    @property
    def params(self) -> int:
        """LoRA parameters: rank x (in + out), summed over the modules."""
        return sum(module_params(m) for m in self.modules)


@dataclass(frozen=True)
class Context:
    """The (model, data, budget) a predictor predicts for, and how the study trains.

    template: a run spec (``RunSpec.to_dict``) of the study: data settings, split seed and
        train settings that the training predictors copy.
    """

    model: str
    dataset: str
    budget: int
    template: dict[str, Any]
    seed: int = 0  # seeds the probe batches and the short runs
    options: dict[str, Any] = field(default_factory=dict)  # short_fraction, proxy_model

    @property
    def text_field(self) -> str:
        return str(self.template.get("text_field", "text"))

    @property
    def train(self) -> dict[str, Any]:
        return dict(self.template.get("train") or {})


@dataclass
class Prediction:
    """One predictor's ranking of the candidates."""

    predictor: str
    scores: dict[str, float]  # label -> score, higher = predicted better
    seconds: float  # what the prediction cost, wall clock
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def order(self) -> list[str]:
        """Labels, predicted best first (ties by label)."""
        return sorted(self.scores, key=lambda k: (-self.scores[k], k))

    @property
    def top(self) -> str:
        return self.order[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "predictor": self.predictor,
            "order": self.order,
            "scores": self.scores,
            "seconds": self.seconds,
            "detail": self.detail,
        }


PredictFn = Callable[[Context, list[Candidate]], Prediction]


@dataclass(frozen=True)
class PredictorInfo:
    """A registered predictor: what it does and what it needs from the context."""

    name: str
    description: str
    fn: PredictFn
    needs: tuple[str, ...] = ()  # context options it cannot run without


PREDICTORS: dict[str, PredictorInfo] = {}


def register(info: PredictorInfo) -> None:
    PREDICTORS[info.name] = info


def check_predictors(names: list[str], options: dict[str, Any]) -> list[PredictorInfo]:
    """The named predictors, or one UserError naming the unknown one or what is missing."""

    if not names:
        raise UserError(f"no predictor given: choose from {', '.join(PREDICTORS)}")
    infos = []
    for name in names:
        if name not in PREDICTORS:
            raise UserError(
                f"unknown predictor {name!r}{closest(name, list(PREDICTORS))}: choose from "
                + ", ".join(PREDICTORS)
            )
        info = PREDICTORS[name]
        for need in info.needs:
            if options.get(need) in (None, ""):
                flag = "--" + need.replace("_", "-")
                raise UserError(f"predictor {name!r} needs {need}: give {flag} MODEL")
        infos.append(info)
    return infos


def run_predictor(name: str, ctx: Context, candidates: list[Candidate]) -> Prediction:
    """Rank ``candidates`` with the predictor ``name`` (at least two candidates)."""
    info = check_predictors([name], ctx.options)[0]
    if len(candidates) < 2:
        raise UserError(f"{len(candidates)} candidate placement(s): a ranking needs at least 2")
    return info.fn(ctx, candidates)
