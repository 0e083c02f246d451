"""The best placement for a budget, from what the store already knows.

Evidence comes in order of strength: measured runs (a study's or a search's, all in the
store), then — when nothing measured fits the budget — a prediction, which is a proposal
with no measured loss. The prediction comes from the predictor that validated best for
this model and data (``loraplace validate``'s ``validation.json``: lowest regret, then
highest Kendall's tau, then cheapest), ranking the presets matched to the budget, random
placements of it and the probe allocations; with no validation for this model and data,
from the default, the taylor probe's allocation. The recommendation carries its evidence
and one line saying which predictor it followed and how that predictor scored, so a
reader can see why it was chosen and how sure it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loraplace.arch import describe, meta_from_config
from loraplace.budget import allocate, parse_budget
from loraplace.errors import UserError
from loraplace.gguf_source import is_gguf_ref
from loraplace.metrics import EVAL_LOSS
from loraplace.models import load_config
from loraplace.placement import PlacementSpec, resolve
from loraplace.predict import Context, run_predictor
from loraplace.predict.candidates import allocated_candidates, budget_candidates
from loraplace.predict.validate import FILE, best_validated, read
from loraplace.probe import probe
from loraplace.store import Store, resolve_store_path


@dataclass
class Candidate:
    """One measured placement (a group of runs differing only in seed)."""

    label: str
    modules: list[dict[str, Any]]
    use_rslora: bool
    model: str
    dataset: str
    trainable_params: int
    losses: list[float]
    run_ids: list[str]
    study_names: set[str] = field(default_factory=set)
    # the runs' data: {dataset, text_field, data} (what an export's data side reads)
    data_source: dict[str, Any] = field(default_factory=dict)
    model_label: str = ""  # the model's name in a study across models, else its reference
    task: str | None = None  # the task of a study over several datasets

    @property
    def mean(self) -> float:
        return sum(self.losses) / len(self.losses)

    @property
    def ci95(self) -> float | None:
        """Half-width of the 95 % t-interval over seeds (None with one seed)."""
        from loraplace.analysis.aggregate import estimate

        est = estimate(self.losses)
        return None if est is None else est.ci


@dataclass
class Recommendation:
    """The chosen placement and why."""

    source: str  # "measured" | "probe"
    budget: int
    label: str
    modules: list[dict[str, Any]]
    use_rslora: bool
    model: str
    trainable_params: int
    expected_loss: float | None
    ci95: float | None
    n_seeds: int
    evidence: list[str]
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    data_source: dict[str, Any] = field(default_factory=dict)  # the measured runs' data
    # One line: which predictor this followed and how it scored in validation (or none).
    followed: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "followed": self.followed,
            "budget": self.budget,
            "placement": self.label,
            "model": self.model,
            "trainable_params": self.trainable_params,
            "expected_eval_loss": self.expected_loss,
            "ci95": self.ci95,
            "n_seeds": self.n_seeds,
            "evidence": self.evidence,
            "alternatives": self.alternatives,
            "modules": self.modules,
        }


def measured_candidates(
    store_path: str | Path,
) -> tuple[list[Candidate], dict[tuple[str, str], float]]:
    """Finished LoRA placements in a store, grouped over seeds; and zero-shot losses by
    (model, dataset): each model's own baseline."""

    with Store(store_path, create=False, writer=False) as store:
        runs = store.runs()
        metrics = store.metrics()
        names = {s["study_id"]: s["name"] for s in store.studies()}
        links = store.study_links()
    studies_of: dict[str, set[str]] = {}
    for sid, rid in links:
        studies_of.setdefault(rid, set()).add(names.get(sid, sid))
    groups: dict[str, Candidate] = {}
    zero: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        m = metrics.get(r["run_id"], {})
        if r["status"] != "done" or EVAL_LOSS not in m:
            continue
        spec = r["spec"]
        if r["kind"] == "zero-shot":
            zero.setdefault((spec["model"], spec["dataset"]), []).append(m[EVAL_LOSS])
            continue
        if r["kind"] != "lora":
            continue
        ident = {k: v for k, v in spec.items() if k not in ("seed", "study", "placement_name")}
        key = json.dumps(ident, sort_keys=True, default=str)
        c = groups.get(key)
        if c is None:
            c = groups[key] = Candidate(
                label=r["placement"],
                modules=list(spec["modules"]),
                use_rslora=bool(spec.get("use_rslora")),
                model=spec["model"],
                dataset=spec["dataset"],
                trainable_params=int(m.get("trainable_params", 0)),
                losses=[],
                run_ids=[],
                data_source={
                    "dataset": spec["dataset"],
                    "text_field": spec.get("text_field", "text"),
                    "data": spec.get("data") or {},
                },
                model_label=spec.get("model_name") or spec["model"],
                task=spec.get("task"),
            )
        c.losses.append(m[EVAL_LOSS])
        c.run_ids.append(r["run_id"])
        c.study_names |= studies_of.get(r["run_id"], set())
    zero_mean = {k: sum(v) / len(v) for k, v in zero.items()}
    return list(groups.values()), zero_mean


def recommend_placement(
    source: str | Path,
    budget: int | str,
    data: str | None = None,
    validation: str | Path | None = None,
    model: str | None = None,
) -> Recommendation:
    """The recommendation for ``source`` (a store, its directory, or a model) at ``budget``.

    A store answers from its measured runs; when none fits the budget, or ``source`` is a
    model, a prediction on ``data`` (which is then required).

    Args:
        validation: a ``validation.json`` (or its directory); default: the store
            directory's own, when there is one.
        model: which model of a store across models (its name or reference).
    """

    store = resolve_store_path(source)
    is_store = store.exists() and not is_gguf_ref(str(source))  # a .gguf file is a model
    vdoc = _validation(validation, store.parent if is_store else None)
    if is_store:
        every, zero = measured_candidates(store)
        if not every:
            raise UserError(f"{store} holds no finished runs: run the study first")
        cands = pick_cell(every, store, model, data)
        rec = recommend_from_store(cands, zero, budget) if cands else None
        if rec is not None:
            rec.followed = "followed: measured runs at this budget (no predictor needed)"
            return rec
        if data is None:
            raise UserError(
                f"no measured placement in {store} fits budget {budget}: give --data "
                "and a model to allocate one from probes, or run a study at this budget"
            )
        mine = [c for c in every if model in (None, c.model_label, c.model)]
        # a task's name stands for its dataset (what the probes read)
        dataset = next((c.dataset for c in mine if data == c.task), data)
        return recommend_unmeasured(mine[0].model, dataset, budget, vdoc)
    if Path(source).suffix == ".db":
        raise UserError(f"no results store at {source}: run `loraplace run` first")
    if data is None:
        raise UserError(
            f"{str(source)!r} is a model, not a results store: give --data DATASET to probe it"
        )
    return recommend_unmeasured(str(source), data, budget, vdoc)


def pick_cell(
    cands: list[Candidate], store: Path, model: str | None, data: str | None
) -> list[Candidate]:
    """The measured placements of one model on one task: measured runs of two models or
    two tasks are never ranked together (their losses differ in scale). ``model`` and
    ``data`` choose; a store with several and no choice is one UserError. ``data`` that
    matches no measured task leaves nothing measured (a prediction follows)."""
    labels = list(dict.fromkeys(c.model_label for c in cands))
    if model is not None:
        cands = [c for c in cands if model in (c.model_label, c.model)]
        if not cands:
            raise UserError(
                f"{store} holds no finished run of model {model!r}: choose one of "
                + ", ".join(labels)
            )
    elif len(labels) > 1:
        raise UserError(
            f"{store} holds runs of {len(labels)} models ({', '.join(labels)}): give "
            "--model NAME to recommend for one of them"
        )
    if data is not None:
        return [c for c in cands if data in (c.task, c.dataset)]
    tasks = list(dict.fromkeys(c.task or c.dataset for c in cands))
    if len(tasks) > 1:
        raise UserError(
            f"{store} holds runs on {len(tasks)} tasks ({', '.join(tasks)}): give --data "
            "TASK to recommend for one of them"
        )
    return cands


def _validation(path: str | Path | None, store_dir: Path | None) -> dict[str, Any] | None:
    """The validation document to follow: the one given, else the store directory's."""

    if path is not None:
        return read(path)
    if store_dir is not None and (store_dir / FILE).exists():
        return read(store_dir)
    return None


def recommend_unmeasured(
    model: str, data: str, budget: int | str, vdoc: dict[str, Any] | None
) -> Recommendation:
    """Nothing measured fits: follow the predictor that validated best, else the default."""

    best = best_validated(vdoc, model, data) if vdoc is not None else None
    if best is None:
        rec = recommend_from_probe(model, data, budget)
        why = (
            "no validation file"
            if vdoc is None
            else f"the validation of study {vdoc.get('study')!r} has no cell for {model} on {data}"
        )
        rec.followed = (
            f"followed: the default (taylor probe allocation): {why}; run `loraplace "
            "validate` on a finished study of this model and data to choose a predictor"
        )
        return rec
    return recommend_from_predictor(model, data, budget, best, vdoc or {})


def validation_line(best: dict[str, Any]) -> str:
    """How the followed predictor scored in validation, in one line."""
    cells = best["cells"]
    n = len(cells)
    agree = sum(1 for c in cells if c["top1_agrees"])
    taus = [c["tau"] for c in cells if c["tau"] is not None]
    tau = f"{sum(taus) / len(taus):.2f}" if taus else "undefined"
    regret = sum(c["regret"] for c in cells) / n
    cis = [c["regret_ci"] for c in cells if c["regret_ci"] is not None]
    ci = f" ± {max(cis):.4f}" if cis else ""
    fracs = [c["cost_fraction"] for c in cells if c["cost_fraction"] is not None]
    cost = f", cost {sum(fracs) / len(fracs):.3f} of the study" if fracs else ""
    return (
        f"followed predictor {best['predictor']}: best in the validation on study "
        f"{best.get('study')!r} ({n} cell(s)): top-1 agreed {agree}/{n}, Kendall tau {tau}, "
        f"regret {regret:.4f}{ci} {cells[0]['metric']}{cost}"
    )


def recommend_from_predictor(
    model: str, data: str, budget: int | str, best: dict[str, Any], vdoc: dict[str, Any]
) -> Recommendation:
    """The top placement of a validated predictor among the budget's candidates."""

    arch = _meta(model)
    cap = parse_budget(budget, arch)
    base = best.get("template") or vdoc.get("template") or {}
    template = {**base, "model": model, "dataset": data}
    ctx = Context(model, data, cap, template, int(vdoc.get("seed", 0)), vdoc.get("options", {}))
    cands = budget_candidates(model, cap, arch) + allocated_candidates(ctx, arch)
    pred = run_predictor(best["predictor"], ctx, cands)
    top = next(c for c in cands if c.label == pred.top)
    rec = proposal(
        "predictor",
        cap,
        top.label,
        [dict(m) for m in top.modules],
        model,
        top.params,
        [
            f"no measured placement fits {cap:,} params: {len(cands)} candidates (presets "
            f"matched to the budget, random placements and probe allocations of it) ranked "
            f"by {pred.predictor} in {pred.seconds:.1f} s",
            "ranking: " + ", ".join(pred.order[:5]) + (" ..." if len(cands) > 5 else ""),
        ],
    )
    rec.followed = validation_line(best)
    return rec


def proposal(
    source: str,
    budget: int,
    label: str,
    modules: list[dict[str, Any]],
    model: str,
    params: int,
    evidence: list[str],
    use_rslora: bool = False,
) -> Recommendation:
    """A recommendation nothing measured: no expected loss, and a warning that says so."""
    return Recommendation(
        source=source,
        budget=budget,
        label=label,
        modules=modules,
        use_rslora=use_rslora,
        model=model,
        trainable_params=params,
        expected_loss=None,
        ci95=None,
        n_seeds=0,
        evidence=[*evidence, "not measured: run it in a study (with seeds) before relying on it"],
    )


def recommend_from_store(
    cands: list[Candidate], zero: dict[tuple[str, str], float], budget: int | str
) -> Recommendation | None:
    """The measured placement (of one model and task) with the lowest mean eval loss
    within the budget, or None."""

    model = cands[0].model
    cap = parse_budget(budget, _meta(model))
    fitting = [c for c in cands if c.trainable_params <= cap]
    if not fitting:
        return None
    fitting.sort(key=lambda c: (c.mean, c.trainable_params))
    best = fitting[0]
    ev = [
        f"{len(fitting)} measured placement(s) of {len(cands)} fit the budget of {cap:,} "
        f"trainable params on {best.dataset}",
        f"{best.label}: eval loss {best.mean:.4f}"
        + (f" ± {best.ci95:.4f} (95 % CI)" if best.ci95 is not None else "")
        + f" over {len(best.losses)} seed(s), {best.trainable_params:,} params "
        f"(from studies: {', '.join(sorted(best.study_names)) or '?'})",
    ]
    if (model, best.dataset) in zero:
        ev.append(f"zero-shot eval loss on the same data: {zero[model, best.dataset]:.4f}")
    if len(fitting) > 1:
        nxt = fitting[1]
        gap = nxt.mean - best.mean
        both = [x for x in (best.ci95, nxt.ci95) if x is not None]
        noisy = bool(both) and gap < max(both)
        ev.append(
            f"runner-up {nxt.label}: {nxt.mean:.4f} ({gap:+.4f})"
            + (" — within the seed noise: treat the two as tied" if noisy else "")
        )
    if len(best.losses) < 3:
        ev.append("fewer than 3 seeds: add seeds before trusting the ranking")
    alts = [
        {
            "placement": c.label,
            EVAL_LOSS: c.mean,
            "ci95": c.ci95,
            "n_seeds": len(c.losses),
            "trainable_params": c.trainable_params,
        }
        for c in fitting[:5]
    ]
    return Recommendation(
        source="measured",
        budget=cap,
        label=best.label,
        modules=best.modules,
        use_rslora=best.use_rslora,
        model=model,
        trainable_params=best.trainable_params,
        expected_loss=best.mean,
        ci95=best.ci95,
        n_seeds=len(best.losses),
        evidence=ev,
        alternatives=alts,
        data_source=best.data_source,
    )


def recommend_from_probe(
    model: str, data: str, budget: int | str, *, score: str = "taylor", seed: int = 0
) -> Recommendation:
    """A placement allocated from importance probes: a proposal, not a measurement."""

    cap = parse_budget(budget, _meta(model))
    result = probe(model, data, seed=seed)
    alloc = allocate(result.importance(score), _meta(model), cap)
    rp = alloc.resolved
    return proposal(
        "probe",
        cap,
        str(rp.name),
        [dict(m) for m in rp.as_dicts()],
        model,
        rp.trainable_params,
        [
            f"no measured placement fits {cap:,} params: allocated from the {score!r} probe "
            f"on {data} (seed {seed})",
            f"{len(rp.modules)} modules, {rp.trainable_params:,} params; roles: "
            + ", ".join(f"{k} x{v['modules']}" for k, v in rp.by_role().items()),
        ],
        use_rslora=rp.use_rslora,
    )


def placement_of(rec: Recommendation):
    """The recommendation as a resolved placement (for plan and export)."""

    spec = PlacementSpec(
        name=rec.label,
        target_modules=[m["name"] for m in rec.modules],
        module_rank={m["name"]: int(m["rank"]) for m in rec.modules},
        alpha_rule="rslora" if rec.use_rslora else "fixed",
    )
    rp = resolve(spec, _meta(rec.model))
    # alphas are per module in the measured run: keep them exactly

    alpha = {m["name"]: float(m["alpha"]) for m in rec.modules}
    rp.modules = [replace(m, alpha=alpha[m.name]) for m in rp.modules]
    return rp


def _meta(model: str):
    config = load_config(model)
    return describe(meta_from_config(config), config)
