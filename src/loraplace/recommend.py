"""The best placement for a budget, from what the store already knows.

Evidence comes in order of strength: measured runs (a study's or a search's, all in the
store), then — when nothing measured fits the budget — an allocation from importance
probes, which is a proposal with no measured loss. The recommendation carries its
evidence, so a reader can see why it was chosen and how sure it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loraplace.arch import describe, meta_from_config
from loraplace.budget import allocation, parse_budget
from loraplace.errors import UserError
from loraplace.gguf_source import is_gguf_ref
from loraplace.models import load_config
from loraplace.placement import PlacementSpec, resolve
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

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
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


def measured_candidates(store_path: str | Path) -> tuple[list[Candidate], dict[str, float]]:
    """Finished LoRA placements in a store, grouped over seeds; and zero-shot losses."""

    with Store(store_path, create=False, writer=False) as store:
        runs = store.runs()
        metrics = store.metrics()
        names = {s["study_id"]: s["name"] for s in store.studies()}
        links = store.study_links()
    studies_of: dict[str, set[str]] = {}
    for sid, rid in links:
        studies_of.setdefault(rid, set()).add(names.get(sid, sid))
    groups: dict[str, Candidate] = {}
    zero: dict[str, list[float]] = {}
    for r in runs:
        m = metrics.get(r["run_id"], {})
        if r["status"] != "done" or "eval_loss" not in m:
            continue
        spec = r["spec"]
        if r["kind"] == "zero-shot":
            zero.setdefault(spec["dataset"], []).append(m["eval_loss"])
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
            )
        c.losses.append(m["eval_loss"])
        c.run_ids.append(r["run_id"])
        c.study_names |= studies_of.get(r["run_id"], set())
    zero_mean = {k: sum(v) / len(v) for k, v in zero.items()}
    return list(groups.values()), zero_mean


def recommend_placement(
    source: str | Path, budget: int | str, data: str | None = None
) -> Recommendation:
    """The recommendation for ``source`` (a store, its directory, or a model) at ``budget``.

    A store answers from its measured runs; when none fits the budget, or ``source`` is a
    model, an allocation from probes on ``data`` (which is then required).
    """

    store = resolve_store_path(source)
    if store.exists() and not is_gguf_ref(str(source)):  # a .gguf file is a model
        rec = recommend_from_store(store, budget)
        if rec is not None:
            return rec
        if data is None:
            raise UserError(
                f"no measured placement in {store} fits budget {budget}: give --data "
                "and a model to allocate one from probes, or run a study at this budget"
            )
        cands, _ = measured_candidates(store)
        if not cands:
            raise UserError(f"{store} holds no finished runs: run the study first")
        return recommend_from_probe(cands[0].model, data, budget)
    if Path(source).suffix == ".db":
        raise UserError(f"no results store at {source}: run `loraplace run` first")
    if data is None:
        raise UserError(
            f"{str(source)!r} is a model, not a results store: give --data DATASET to probe it"
        )
    return recommend_from_probe(str(source), data, budget)


def recommend_from_store(store_path: str | Path, budget: int | str) -> Recommendation | None:
    """The measured placement with the lowest mean eval loss within the budget, or None."""

    cands, zero = measured_candidates(store_path)
    if not cands:
        return None
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
    if best.dataset in zero:
        ev.append(f"zero-shot eval loss on the same data: {zero[best.dataset]:.4f}")
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
            "eval_loss": c.mean,
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
    alloc = allocation(result.importance(score), _meta(model), cap)
    rp = alloc.resolved
    return Recommendation(
        source="probe",
        budget=cap,
        label=rp.name,
        modules=[dict(m) for m in rp.as_dicts()],
        use_rslora=rp.use_rslora,
        model=model,
        trainable_params=rp.trainable_params,
        expected_loss=None,
        ci95=None,
        n_seeds=0,
        evidence=[
            f"no measured placement fits {cap:,} params: allocated from the {score!r} probe "
            f"on {data} (seed {seed})",
            f"{len(rp.modules)} modules, {rp.trainable_params:,} params; roles: "
            + ", ".join(f"{k} x{v['modules']}" for k, v in rp.by_role().items()),
            "not measured: run it in a study (with seeds) before relying on it",
        ],
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
