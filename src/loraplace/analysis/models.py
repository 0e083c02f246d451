"""Do the models agree on the placements? Per-model comparisons, Kendall's W across models,
and what users of a cheap proxy need: did the smallest model rank the placements as the
biggest one did?

Each model of a study across models is compared on its own (``fair.compare`` on its runs
alone: its own selection, its own headline). On each task the models then rank the
placements by their headline task accuracy when the study stores one, else by their
headline loss (``agreement.rank_table``, models as the raters), and
Kendall's W says how far they agree. The proxy check sets the model with the fewest
parameters against the one with the most: Spearman's ρ and Kendall's τ between their
orders, and whether the orders are the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loraplace.analysis.accuracy_grid import headline_metric
from loraplace.analysis.agreement import KendallW, RankTable, kendall_w, rank_table
from loraplace.analysis.fair import FairComparison, compare
from loraplace.analysis.read import StudyData
from loraplace.analysis.task_metrics import task_metrics, task_rows

_PARAMS = "total_params"  # the base model's parameter count, stored with every run


@dataclass(frozen=True)
class ProxyCheck:
    """The smallest model's placement order against the biggest's, on one task."""

    small: str
    big: str
    small_params: int
    big_params: int
    small_order: tuple[str, ...]  # best first
    big_order: tuple[str, ...]
    spearman: float | None  # None: undefined (a model ties every placement)
    kendall_tau: float | None

    @property
    def same_order(self) -> bool:
        return self.small_order == self.big_order


@dataclass(frozen=True)
class ModelAgreement:
    """On one task: each model's rank of each placement, Kendall's W, the proxy check."""

    task: str | None
    ranks: RankTable  # rows: models
    kendall: KendallW | None
    proxy: ProxyCheck | None
    by: str = "loss"  # what the ranks read: "loss", or the task metric (higher is better)
    on_test: bool = False  # the scores are test-split numbers


@dataclass(frozen=True)
class ModelComparison:
    """A study across models: each model's fair comparison, and their agreement per task."""

    study: StudyData  # every model's runs
    models: list[str]
    fairs: dict[str, FairComparison]
    params: dict[str, int]  # model -> parameters (models whose runs store the count)
    agreements: list[ModelAgreement]


def compare_models(study: StudyData, reference: str | None = None) -> ModelComparison | None:
    """Every model compared on its own and the models set side by side; None when the
    study has fewer than two models."""
    models = study.models()
    if len(models) < 2:
        return None
    fairs = {m: compare(study.for_model(m), reference) for m in models}
    params = {m: n for m in models if (n := _params(study.for_model(m))) is not None}
    agreements = []
    for task in study.tasks():
        by, scores = _scores(fairs, task)
        if len(scores) < 2:
            continue
        ranks = rank_table(scores)
        if len(ranks.placements) < 2:
            continue
        agreements.append(
            ModelAgreement(
                task,
                ranks,
                kendall_w(ranks.ranks),
                proxy_check(ranks, params),
                by,
                all(f.on_test for f in fairs.values()),
            )
        )
    return ModelComparison(study, models, fairs, params, agreements)


def _scores(
    fairs: dict[str, FairComparison], task: str | None
) -> tuple[str, dict[str, dict[str, float]]]:
    """Each model's score per placement on ``task``, lower is better: the task metric
    negated when every model stores one (accuracy is what users of a task care about and
    can rank placements unlike loss), else the headline loss. Returns (metric, scores)."""
    on = {
        m: t for m, f in fairs.items() if (t := next((t for t in f.tasks if t.task == task), None))
    }
    metrics = {m: headline_metric(task_metrics(t.summary)) for m, t in on.items()}
    by = next(iter(metrics.values()), None)
    if by is not None and all(v == by for v in metrics.values()):
        return by, {
            m: {
                r.placement: -e.mean
                for r in task_rows(t.summary, [by])
                if r.placement != "zero-shot" and (e := r.values[by]) is not None
            }
            for m, t in on.items()
        }
    return "loss", {
        m: {p.placement: p.loss.mean for p in t.summary.placements} for m, t in on.items()
    }


def _params(study: StudyData) -> int | None:
    counts = [r.metrics[_PARAMS] for r in study.runs if _PARAMS in r.metrics]
    return int(max(counts)) if counts else None


def proxy_check(ranks: RankTable, params: dict[str, int]) -> ProxyCheck | None:
    """The fewest-parameter model against the most-parameter one (None when the ranked
    models' sizes are unknown or equal)."""
    sized = [m for m in ranks.tasks if m in params]
    if len(sized) < 2:
        return None
    small = min(sized, key=lambda m: params[m])
    big = max(sized, key=lambda m: params[m])
    if params[small] == params[big]:
        return None
    from scipy.stats import kendalltau, spearmanr  # 0.4 s to import: only these reports

    a = [ranks.rank(small, p) for p in ranks.placements]
    b = [ranks.rank(big, p) for p in ranks.placements]
    rho = float(spearmanr(a, b).statistic) if len(set(a)) > 1 and len(set(b)) > 1 else None
    tau = float(kendalltau(a, b).statistic) if rho is not None else None
    return ProxyCheck(
        small,
        big,
        params[small],
        params[big],
        _order(ranks, small),
        _order(ranks, big),
        rho if rho is not None and math.isfinite(rho) else None,
        tau if tau is not None and math.isfinite(tau) else None,
    )


def _order(ranks: RankTable, model: str) -> tuple[str, ...]:
    """The placements best first (tied ones in study order)."""
    return tuple(sorted(ranks.placements, key=lambda p: ranks.rank(model, p)))
