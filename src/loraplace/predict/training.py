"""Predictors that train: short runs (the first rung of successive halving) and a proxy.

- ``short-runs``: every candidate trained for a fraction of the study's steps (default
  0.1, ``short_fraction``), one seed, ranked by its eval loss at the end. This is the
  first rung of ``executors/halving.py`` with every candidate kept as one setting.
- ``proxy``: the same short runs of the same candidates on a smaller model
  (``proxy_model``: any model reference, e.g. tiny-markov for tiny-python, or a copy of
  the model with fewer layers). A candidate is carried over by (layer, role): the adapter
  on layer ``l`` of ``L`` goes to layer ``floor(l * L' / L)`` of the proxy's ``L'``, same
  role and rank (capped by the proxy module's size), same alpha / rank; where several
  layers land on one, the largest rank wins. The proxy trains the study's full steps
  unless ``proxy_fraction`` says otherwise.

Settings are the study's (its template run spec) except the steps, the warm-up (scaled
with the steps), evaluation only at the end, and no retain or task evaluations. The cost
is the wall time of all the runs, loading included.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import replace
from typing import Any

from loraplace.arch import describe, meta_from_config
from loraplace.errors import UserError
from loraplace.metrics import EVAL_LOSS
from loraplace.models import load_config
from loraplace.placement import PlacementSpec, resolve
from loraplace.predict.base import Candidate, Context, Prediction, PredictorInfo, register
from loraplace.runs import RunSpec, TrainSettings

SHORT_FRACTION = 0.1


def short_spec(ctx: Context, cand: Candidate, *, model: str, fraction: float, modules=None):
    """The run spec of one short run of ``cand`` (on ``model``, with ``modules`` if given)."""

    spec = RunSpec.from_dict(ctx.template)
    t = spec.train
    steps = max(1, math.ceil(t.steps * fraction))
    train = dataclasses.replace(
        t,
        steps=steps,
        epochs=None,
        warmup_steps=min(t.warmup_steps, math.ceil(t.warmup_steps * fraction)),
        eval_every=0,
    )
    assert isinstance(train, TrainSettings)
    fps = dict(spec.fingerprints)
    if model != spec.model:
        fps.pop("model", None)  # another model: its fingerprint is not the study's
    return dataclasses.replace(
        spec,
        study="predict",
        placement_name=cand.label,
        kind="lora",
        model=model,
        seed=ctx.seed,
        train=train,
        modules=tuple(modules if modules is not None else cand.modules),
        use_rslora=cand.use_rslora,
        retain_dataset=None,
        eval_tasks=(),
        fingerprints=fps,
        task=None,
        placement_base=None,
        setting={},
    )


def train_and_rank(name: str, specs: dict[str, Any], detail: dict[str, Any]) -> Prediction:
    """Run ``specs`` (label -> RunSpec) in this process; score = minus the eval loss."""
    from loraplace.executors.local import LocalExecutor

    executor = LocalExecutor(keep_adapters=False)
    t0 = time.perf_counter()
    losses: dict[str, float] = {}
    for label, spec in specs.items():
        result = executor.run_one(spec)
        loss = result.metrics.get(EVAL_LOSS)
        if result.status != "done" or loss is None:
            raise UserError(
                f"predictor {name}: the short run of {label!r} ended {result.status} "
                f"({result.error or 'no eval loss'}): check the study's train settings"
            )
        losses[label] = float(loss)
    seconds = time.perf_counter() - t0
    detail = {**detail, EVAL_LOSS: losses, "steps": next(iter(specs.values())).train.steps}
    return Prediction(name, {k: -v for k, v in losses.items()}, seconds, detail)


def check_options(predictors: list[str], options: dict[str, Any]) -> None:
    """The training predictors' options, checked before any predictor runs."""
    for key in ("short_fraction", "proxy_fraction"):
        value = options.get(key)
        if value is not None and not 0 < float(value) <= 1:
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag} {value} must lie in (0, 1]: e.g. 0.1")
    if "proxy" in predictors and options.get("proxy_model"):
        _arch(str(options["proxy_model"]))  # an unknown or unreadable model fails here


def _short_runs(ctx: Context, candidates: list[Candidate]) -> Prediction:
    fraction = float(ctx.options.get("short_fraction") or SHORT_FRACTION)
    specs = {c.label: short_spec(ctx, c, model=ctx.model, fraction=fraction) for c in candidates}
    return train_and_rank("short-runs", specs, {"fraction": fraction})


def _arch(model: str):

    config = load_config(model)
    return describe(meta_from_config(config), config)


def carry_over(modules: tuple[dict[str, Any], ...], n_layers: int, proxy) -> list[dict[str, Any]]:
    """A placement's modules moved onto the proxy's architecture (module docstring)."""
    chosen: dict[tuple[int, str], tuple[int, float]] = {}  # proxy (layer, role) -> rank, alpha/r
    for m in modules:
        if m.get("layer") is None:
            continue
        layer = int(m["layer"]) * proxy.n_layers // max(1, n_layers)
        key = (layer, str(m["role"]))
        rank, ratio = int(m["rank"]), float(m["alpha"]) / int(m["rank"])
        if key not in chosen or rank > chosen[key][0]:
            chosen[key] = (rank, ratio)
    ranks = {}
    for pm in proxy.modules:
        key = (pm.layer, pm.role)
        if pm.layer is not None and pm.tower == "language" and key in chosen:
            ranks[pm.name] = (min(chosen[key][0], pm.in_features, pm.out_features), key)
    if not ranks:
        return []

    spec = PlacementSpec(
        name="proxy",
        target_modules=list(ranks),
        module_rank={n: r for n, (r, _) in ranks.items()},
    )
    rp = resolve(spec, proxy)
    # alpha / rank as on the model itself (what the alpha rule of the study gave it)
    mods = [replace(m, alpha=chosen[ranks[m.name][1]][1] * m.rank) for m in rp.modules]
    return [dict(d) for d in dataclasses.replace(rp, modules=mods).as_dicts()]


def _proxy(ctx: Context, candidates: list[Candidate]) -> Prediction:
    proxy_model = str(ctx.options["proxy_model"])
    fraction = float(ctx.options.get("proxy_fraction") or 1.0)
    n_layers = _arch(ctx.model).n_layers
    proxy = _arch(proxy_model)
    specs = {}
    for c in candidates:
        mods = carry_over(c.modules, n_layers, proxy)
        if not mods:
            raise UserError(
                f"predictor proxy: placement {c.label!r} has no (layer, role) that "
                f"{proxy_model} has: choose a proxy of the same family"
            )
        specs[c.label] = short_spec(ctx, c, model=proxy_model, fraction=fraction, modules=mods)
    detail = {"proxy_model": proxy_model, "fraction": fraction, "layers": proxy.n_layers}
    return train_and_rank("proxy", specs, detail)


register(
    PredictorInfo(
        "short-runs",
        "short runs: each candidate trained a fraction of the steps, ranked by eval loss",
        _short_runs,
    )
)
register(
    PredictorInfo(
        "proxy",
        "the candidates trained on a smaller model (proxy_model), ranked by eval loss",
        _proxy,
        needs=("proxy_model",),
    )
)
