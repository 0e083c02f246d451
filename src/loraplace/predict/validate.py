"""Each predictor's ranking checked against what a finished study measured.

Per (model, task) of the study and per predictor:

- **cost fraction**: the predictor's wall-clock seconds over the study's, the sum of its
  runs' ``train_time_s`` (evaluation and loading not counted on the study's side, so the
  fraction errs against the predictor);
- **top-1**: whether the predictor's first placement is the measured best (best mean over
  seeds of the metric);
- **Kendall's tau** (tau-b, ``scipy.stats.kendalltau``) between the predictor's scores
  and the measured means, both oriented higher = better: 1 is the measured order;
- **regret**: the metric lost by following the predictor instead of the best placement,
  paired over the seeds both have (best minus chosen for accuracy, chosen minus best for
  loss, so positive is lost), with its 95 % t-interval over seeds. Zero when the
  predictor picks the best.

The metric is the runs' task ``accuracy`` when every finished run has one, else the
eval loss. Results go to ``validation.md`` (a table), ``validation.json`` and
``validation.csv``; ``recommend`` reads the JSON.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loraplace.errors import UserError
from loraplace.metrics import ACCURACY, EVAL_LOSS
from loraplace.predict import check_predictors, probes, run_predictor
from loraplace.predict.candidates import study_candidates
from loraplace.predict.training import check_options
from loraplace.store import resolve_store_path

FILE = "validation.json"


@dataclass(frozen=True)
class Measured:
    """A task's measured placements: metric per seed, oriented by ``higher_better``."""

    metric: str
    higher_better: bool
    by_seed: dict[str, dict[int, float]]  # label -> seed -> value
    seconds: float  # the study's cost: sum of train_time_s of the task's runs

    def goodness(self, label: str, seed: int) -> float:
        v = self.by_seed[label][seed]
        return v if self.higher_better else -v

    def mean(self, label: str) -> float:
        vals = self.by_seed[label].values()
        return sum(vals) / len(vals)

    @property
    def best(self) -> str:
        sign = 1.0 if self.higher_better else -1.0
        return min(self.by_seed, key=lambda k: (-sign * self.mean(k), k))


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


def measured(study) -> Measured:
    """The measured placements of one task of a study (``StudyData.for_task``)."""
    done = [r for r in study.runs if r.kind == "lora" and r.done]
    accuracy = bool(done) and all("accuracy" in r.metrics for r in done)
    metric = ACCURACY if accuracy else EVAL_LOSS
    by_seed: dict[str, dict[int, float]] = {}
    for r in done:
        if metric in r.metrics:
            by_seed.setdefault(r.placement, {})[r.seed] = float(r.metrics[metric])
    seconds = sum(float(r.metrics.get("train_time_s", 0.0)) for r in study.runs if r.done)
    return Measured(metric, accuracy, by_seed, seconds)


def kendall_tau(scores: dict[str, float], m: Measured) -> tuple[float | None, float | None]:
    """tau-b and its p-value between predicted scores and measured means (None if undefined)."""
    from scipy.stats import kendalltau

    labels = sorted(set(scores) & set(m.by_seed))
    sign = 1.0 if m.higher_better else -1.0
    res = kendalltau([scores[k] for k in labels], [sign * m.mean(k) for k in labels])
    tau, p = float(res.statistic), float(res.pvalue)
    return (None, None) if math.isnan(tau) else (tau, None if math.isnan(p) else p)


def regret(chosen: str, m: Measured) -> tuple[float, float | None, int]:
    """(mean, 95 % CI half-width, seeds): the metric lost by choosing ``chosen``."""
    from loraplace.analysis.aggregate import estimate

    best = m.best
    seeds = sorted(set(m.by_seed[best]) & set(m.by_seed[chosen]))
    if not seeds:
        raise UserError(f"placements {best!r} and {chosen!r} share no seed: regret undefined")
    est = estimate(m.goodness(best, s) - m.goodness(chosen, s) for s in seeds)
    assert est is not None
    return est.mean, est.ci, est.n


def score_cell(pred, m: Measured, model: str, task: str) -> Cell:
    """A prediction (``base.Prediction``) set against the measured placements."""
    scores = {k: v for k, v in pred.scores.items() if k in m.by_seed}
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
    )


def validate(
    source: str | Path,
    predictors: list[str],
    *,
    options: dict[str, Any] | None = None,
    study: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run ``predictors`` on a finished study's placements and score them (module doc).

    Everything a user can get wrong (no store, no finished runs, fewer than 2
    placements, an unknown predictor or a missing option) is checked before any
    predictor runs.
    """
    from loraplace.analysis.read import read_study_data

    options = dict(options or {})
    store = resolve_store_path(source)
    if not store.exists():
        raise UserError(f"no results store at {store}: run the study first (`loraplace run`)")
    check_predictors(predictors, options)

    check_options(predictors, options)
    data = read_study_data(store, study)
    if len(data.models()) > 1:  # candidates take the model of their first run
        raise UserError(
            f"study {data.name!r} ran {len(data.models())} models, and validation ranks one "
            "model's placements: validate a study with one model: key"
        )
    groups = [(task, data.for_task(task)) for task in data.tasks()]
    # a group with only baseline runs has nothing to rank (unless nothing else has)
    trained = [(t, sub) for t, sub in groups if any(r.kind == "lora" for r in sub.runs)]
    tasks = []
    for task, sub in trained or groups:
        ctx, cands = study_candidates(sub, options, seed)
        tasks.append((task, sub, ctx, cands))

    probes.clear_cache()  # a model or data file may have changed since an earlier call
    cells, predictions = [], []
    for task, sub, ctx, cands in tasks:
        m = measured(sub)
        label = task or ctx.dataset
        for name in predictors:
            pred = run_predictor(name, ctx, cands)
            predictions.append({"task": label, **pred.to_json()})
            cells.append(score_cell(pred, m, ctx.model, label).to_json())
    return {
        "study": data.name,
        "store": str(store),
        "created": time.time(),
        "seed": seed,
        "options": options,
        "datasets": {t or c.dataset: c.dataset for t, _, c, _ in tasks},
        "template": tasks[0][2].template,
        "cells": cells,
        "predictions": predictions,
    }


COLUMNS = (
    "predictor",
    "model",
    "task",
    "cost (s)",
    "cost fraction",
    "top-1",
    "measured best",
    "top-1 agrees",
    "Kendall tau",
    "regret ± 95 % CI (seeds)",
)


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def table_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in doc["cells"]:
        ci = f" ± {c['regret_ci']:.4f}" if c["regret_ci"] is not None else ""
        rows.append(
            [
                c["predictor"],
                c["model"],
                c["task"],
                f"{c['seconds']:.1f}",
                _fmt(c["cost_fraction"], ".3f"),
                c["top1"],
                c["best"],
                "yes" if c["top1_agrees"] else "no",
                _fmt(c["tau"], ".3f"),
                f"{c['regret']:.4f}{ci} ({c['regret_seeds']})",
            ]
        )
    return rows


def markdown(doc: dict[str, Any]) -> str:
    metric = doc["cells"][0]["metric"] if doc["cells"] else EVAL_LOSS
    lines = [
        f"# Predictor validation: study {doc['study']}",
        "",
        f"Regret in {metric} ({'higher' if metric == 'accuracy' else 'lower'} is better; "
        "positive = lost by following the predictor), paired over seeds.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(doc)]
    return "\n".join([*lines, "", summary(doc)]) + "\n"


def summary(doc: dict[str, Any]) -> str:
    """One line: the cheapest predictor whose regret is within seed noise on every cell."""
    by: dict[str, list[dict[str, Any]]] = {}
    for c in doc["cells"]:
        by.setdefault(c["predictor"], []).append(c)
    ok = [p for p, cs in by.items() if all(c["within_noise"] for c in cs)]
    counts = ", ".join(
        f"{p} {sum(c['within_noise'] for c in cs)}/{len(cs)}" for p, cs in by.items()
    )
    if not ok:
        return f"No predictor's regret is within seed noise on every cell ({counts})."
    cheapest = min(ok, key=lambda p: (sum(c["seconds"] for c in by[p]), p))
    return (
        f"Cheapest predictor with regret within seed noise (95 % CI reaching 0) on every "
        f"cell: **{cheapest}** (cells within noise: {counts})."
    )


def write(doc: dict[str, Any], out: Path) -> list[Path]:
    """validation.md, .json and .csv under ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    md, js, cs = out / "validation.md", out / FILE, out / "validation.csv"
    md.write_text(markdown(doc), encoding="utf-8")
    js.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
    keys = list(doc["cells"][0]) if doc["cells"] else []
    with cs.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=[k for k in keys if k != "order"], extrasaction="ignore")
        w.writeheader()
        w.writerows(doc["cells"])
    return [md, js, cs]


def best_validated(doc: dict[str, Any], model: str, dataset: str) -> dict[str, Any] | None:
    """The predictor that validated best for (model, dataset), with its scores; or None.

    Best = lowest mean regret over the matching cells, then highest mean tau, then
    cheapest. ``dataset`` matches a cell's task or the dataset that task names.
    """
    datasets = doc.get("datasets", {})
    cells = [
        c
        for c in doc.get("cells", [])
        if c["model"] == model and dataset in (c["task"], datasets.get(c["task"]))
    ]
    if not cells:
        return None
    by: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        by.setdefault(c["predictor"], []).append(c)

    def key(name: str):
        cs = by[name]
        taus = [c["tau"] for c in cs if c["tau"] is not None]
        return (
            sum(c["regret"] for c in cs) / len(cs),
            -(sum(taus) / len(taus)) if taus else math.inf,
            sum(c["seconds"] for c in cs),
            name,
        )

    name = min(by, key=key)
    return {"predictor": name, "cells": by[name], "study": doc.get("study")}


def read(path: str | Path) -> dict[str, Any]:
    """A validation file (or the directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / FILE
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no validation file at {p}: run `loraplace validate` first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        raise UserError(f"{p} is not a validation file ({why}): run validate again") from None
    problem = _shape_problem(doc)
    if problem:
        raise UserError(f"{p} is not a validation file ({problem}): run validate again")
    return doc


_NUMBER = (int, float)
_CELL_KEYS: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "task": str,
    "predictor": str,
    "regret": _NUMBER,
    "seconds": _NUMBER,
}


def _shape_problem(doc: Any) -> str | None:
    """What keeps ``doc`` from being read as a validation document, if anything."""
    if not isinstance(doc, dict) or not isinstance(doc.get("cells"), list):
        return "no list of cells"
    if not isinstance(doc.get("datasets", {}), dict):
        return "datasets is not a mapping"
    for i, cell in enumerate(doc["cells"]):
        if not isinstance(cell, dict):
            return f"cell {i} is not a mapping"
        for key, kind in _CELL_KEYS.items():
            if not isinstance(cell.get(key), kind):
                return f"cell {i} has no valid {key}"
        if cell.get("tau") is not None and not isinstance(cell["tau"], _NUMBER):
            return f"cell {i} has no valid tau"
    return None
