"""Each predictor's ranking checked against what a finished study measured.

Per (model, task) cell of the study (``cells.py``: each model on each task, its grid
points chosen by its selection, judged on the test split when there is one) and per
predictor:

- **cost fraction**: the predictor's wall-clock seconds over the cell's training
  seconds (evaluation and loading not counted on the study's side, so the fraction errs
  against the predictor);
- **top-1**: whether the predictor's first placement is the measured best (best mean over
  seeds of the cell's headline metric);
- **Kendall's tau** (tau-b, ``scipy.stats.kendalltau``) between the predictor's scores
  and the measured means, both oriented higher = better: 1 is the measured order;
- **regret**: the metric lost by following the predictor instead of the best placement,
  paired over the seeds both have (best minus chosen for accuracy, chosen minus best for
  loss, so positive is lost), with its 95 % t-interval over seeds. Zero when the
  predictor picks the best;
- **against the best preset**: the same paired difference against the best measured
  preset, with a one-sided paired t-test and Wilcoxon signed-rank test (is the pick
  worse?). Per cell the pick of the predictor ``recommend`` would follow there is
  singled out (``recommend`` in the document): chosen on the same cells it is scored
  on, so it is an in-sample check.

Where the study can answer itself, it does: ``short-runs`` reads the first rung of the
study's successive halving when it has one (else trains its own short runs), and
``proxy`` in a study across models is the smallest model's measured ranking, for each
larger model (unless ``proxy_model`` names a model to train). Results go to
``validation.md``, ``validation.json`` and ``validation.csv`` (``validation_file.py``);
``recommend`` reads the JSON.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loraplace.errors import UserError
from loraplace.predict import check_predictors, probes, run_predictor
from loraplace.predict.cells import Cell as StudyCell
from loraplace.predict.cells import Measured, first_rung, measured, proxy_cell, study_cells
from loraplace.predict.training import check_options
from loraplace.predict.validation_file import (
    FILE,
    best_validated,
    markdown,
    preset_lines,
    read,
    summary,
    table_rows,
    write,
)
from loraplace.store import resolve_store_path

__all__ = [
    "FILE",
    "Cell",
    "Measured",
    "best_validated",
    "markdown",
    "measured",
    "preset_lines",
    "read",
    "score_cell",
    "summary",
    "table_rows",
    "validate",
    "write",
]


@dataclass
class Cell:
    """One predictor on one (model, task): the validation table's row."""

    predictor: str
    model: str
    task: str
    metric: str
    n_candidates: int
    seconds: float
    study_seconds: float
    top1: str
    best: str
    tau: float | None
    tau_p: float | None
    regret: float
    regret_ci: float | None
    regret_seeds: int
    order: list[str] = field(default_factory=list)
    vs_preset: dict[str, Any] | None = None  # the pick against the best preset (paired)

    @property
    def cost_fraction(self) -> float | None:
        return self.seconds / self.study_seconds if self.study_seconds > 0 else None

    @property
    def top1_agrees(self) -> bool:
        return self.top1 == self.best

    @property
    def within_noise(self) -> bool:
        """Regret not distinguishable from zero: its 95 % interval reaches 0."""
        if self.regret == 0:
            return True
        return self.regret_ci is not None and self.regret - self.regret_ci <= 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            cost_fraction=self.cost_fraction,
            top1_agrees=self.top1_agrees,
            within_noise=self.within_noise,
        )
        return d


def kendall_tau(scores: dict[str, float], m: Measured) -> tuple[float | None, float | None]:
    """tau-b and its p-value between predicted scores and measured means (None if undefined)."""
    from scipy.stats import kendalltau

    labels = sorted(set(scores) & set(m.by_seed))
    sign = 1.0 if m.higher_better else -1.0
    res = kendalltau([scores[k] for k in labels], [sign * m.mean(k) for k in labels])
    tau, p = float(res.statistic), float(res.pvalue)
    return (None, None) if math.isnan(tau) else (tau, None if math.isnan(p) else p)


def _lost(chosen: str, best: str, m: Measured) -> list[float]:
    """Per shared seed, the metric lost by ``chosen`` against ``best`` (positive = lost)."""
    seeds = sorted(set(m.by_seed[best]) & set(m.by_seed[chosen]))
    if not seeds:
        raise UserError(f"placements {best!r} and {chosen!r} share no seed: regret undefined")
    return [m.goodness(best, s) - m.goodness(chosen, s) for s in seeds]


def regret(chosen: str, m: Measured) -> tuple[float, float | None, int]:
    """(mean, 95 % CI half-width, seeds): the metric lost by choosing ``chosen``."""
    from loraplace.analysis.aggregate import estimate

    est = estimate(_lost(chosen, m.best, m))
    assert est is not None
    return est.mean, est.ci, est.n


def vs_best_preset(chosen: str, m: Measured) -> dict[str, Any] | None:
    """``chosen`` against the best measured preset, paired over seeds: the mean loss of
    metric (positive = chosen is worse), its 95 % CI, and one-sided p-values (H1: chosen
    is worse) of the paired t-test and the Wilcoxon signed-rank test. None without a
    preset. Identical values on every seed (the same placement) give p = 1."""
    from scipy.stats import ttest_rel, wilcoxon

    from loraplace.analysis.aggregate import estimate

    best = m.best_preset
    if best is None:
        return None
    lost = _lost(chosen, best, m)
    est = estimate(lost)
    assert est is not None
    p_t = p_w = 1.0
    if any(d != 0 for d in lost) and len(lost) >= 2:
        p_t = float(ttest_rel(lost, [0.0] * len(lost), alternative="greater").pvalue)
        p_w = float(wilcoxon(lost, alternative="greater").pvalue)
    return {
        "chosen": chosen,
        "best_preset": best,
        "lost": est.mean,
        "ci": est.ci,
        "seeds": est.n,
        "p_t": None if math.isnan(p_t) else p_t,
        "p_wilcoxon": None if math.isnan(p_w) else p_w,
    }


def score_cell(pred, m: Measured, model: str, task: str) -> Cell:
    """A prediction (``base.Prediction``) set against the measured placements."""
    scores = {k: v for k, v in pred.scores.items() if k in m.by_seed}
    if not scores:
        raise UserError(
            f"predictor {pred.predictor} ranked none of the measured placements of "
            f"{model}, {task}: its candidates and the study's differ"
        )
    order = sorted(scores, key=lambda k: (-scores[k], k))
    tau, p = kendall_tau(scores, m)
    mean, ci, n = regret(order[0], m)
    return Cell(
        predictor=pred.predictor,
        model=model,
        task=task,
        metric=m.metric,
        n_candidates=len(scores),
        seconds=float(pred.seconds),
        study_seconds=m.seconds,
        top1=order[0],
        best=m.best,
        tau=tau,
        tau_p=p,
        regret=mean,
        regret_ci=ci,
        regret_seeds=n,
        order=order,
        vs_preset=vs_best_preset(order[0], m),
    )


def predict_cell(name: str, cell: StudyCell, cells: list[StudyCell]):
    """One predictor's prediction for a cell, from the study itself where it can answer
    (module docstring); None when it has nothing to say (the proxy on the smallest model)."""
    if name == "short-runs":
        rung = first_rung(cell.runs)
        if rung is not None:
            return rung
    if name == "proxy" and not cell.context.options.get("proxy_model"):
        return proxy_cell(cells, cell)
    return run_predictor(name, cell.context, cell.candidates)


def _checked(predictors: list[str], options: dict[str, Any], models: int) -> None:
    """The predictors and their options; a study across models is its own proxy."""
    need = dict(options)
    if models > 1 and not need.get("proxy_model"):
        need["proxy_model"] = "the smallest model's runs"
    check_predictors(predictors, need)


def recommend_checks(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, task): the predictor ``recommend`` follows there (``best_validated``)
    and its pick against the best preset, paired over seeds."""
    out = []
    for key in dict.fromkeys((c["model"], c["task"]) for c in cells):
        doc = {"cells": [c for c in cells if (c["model"], c["task"]) == key]}
        best = best_validated(doc, *key)
        assert best is not None
        cell = best["cells"][0]
        head = {"model": key[0], "task": key[1], "predictor": best["predictor"]}
        vs = cell["vs_preset"] or {"chosen": cell["top1"], "best_preset": None}
        out.append({**head, "metric": cell["metric"], **vs})
    return out


def validate(
    source: str | Path,
    predictors: list[str],
    *,
    options: dict[str, Any] | None = None,
    study: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run ``predictors`` on every (model, task) of a finished study and score them.

    Everything a user can get wrong (no store, no finished runs, fewer than 2
    placements, an unknown predictor or a missing option) is checked before any
    predictor runs.
    """
    from loraplace.analysis.read import read_study_data

    options = dict(options or {})
    store = resolve_store_path(source)
    if not store.exists():
        raise UserError(f"no results store at {store}: run the study first (`loraplace run`)")
    check_options(predictors, options)
    data = read_study_data(store, study)
    _checked(predictors, options, len(data.models()))
    cells = study_cells(data, options, seed)

    probes.clear_cache()  # a model or data file may have changed since an earlier call
    scored, predictions, skipped = [], [], []
    for cell in cells:
        for name in predictors:
            pred = predict_cell(name, cell, cells)
            if pred is None:
                skipped.append({"predictor": name, "model": cell.model, "task": cell.task})
                continue
            where = {"model": cell.model, "task": cell.task}
            predictions.append({**where, **pred.to_json()})
            row = score_cell(pred, cell.measured, cell.model, cell.task).to_json()
            scored.append({**row, "model_ref": cell.context.model})
    contexts = [
        {
            "model": c.model,
            "model_ref": c.context.model,
            "task": c.task,
            "dataset": c.context.dataset,
            "budget": c.context.budget,
            "params": c.params,
            "template": c.context.template,
        }
        for c in cells
    ]
    return {
        "study": data.name,
        "store": str(store),
        "created": time.time(),
        "seed": seed,
        "options": options,
        "datasets": {c.task: c.context.dataset for c in cells},
        "template": cells[0].context.template,
        "contexts": contexts,
        "cells": scored,
        "skipped": skipped,
        "recommend": recommend_checks(scored),
        "predictions": predictions,
    }
