"""Expansion: a validated Study resolved against the model into RunSpecs.

One RunSpec per (task x placement x grid point x seed), plus the zero-shot (and optional
full fine-tuning) baselines of every task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loraplace.budget import match_budget, parse_budget
from loraplace.budget.generated import AllocateEntry, generate, parse_generated
from loraplace.errors import UserError
from loraplace.identity import ZERO_SHOT_FIELDS
from loraplace.placement import parse_placement, resolve
from loraplace.placement.peft_config import lora_config_kwargs
from loraplace.placement.resolve import _arch_of
from loraplace.runs import ZERO_SHOT_SEED, RunSpec, TrainSettings
from loraplace.study.grid import grid_axes, grid_points, point_label, setting_of, varying_axes
from loraplace.study.schema import Study, StudyModel


def wants_probe(study: Study) -> bool:
    """Whether importance probes are scored before training: asked for (``probe:``) or
    implied by an ``allocate`` placement, which spends the budget by their scores."""
    return study.probe is not None or any(
        isinstance(parse_generated(e), AllocateEntry) for e in study.placements
    )


def retain_dataset(study: Study, dataset: str | None = None) -> str | None:
    """The retain set for ``dataset`` (default: the study's own): ``retain:``, or for
    "auto" the built-in dataset's own source (None when it has none)."""
    if study.retain != "auto":
        return study.retain
    from loraplace.data import retain_dataset_for  # data.tokenized: tokenisation, torch

    return retain_dataset_for(dataset or study.dataset)


def expand(
    study: Study,
    *,
    target: Any = None,
    fingerprints: dict[str, str] | None = None,
    scores: Any = None,
    task_fingerprints: dict[str, dict[str, str]] | None = None,
    model_name: str | None = None,
) -> tuple[list[RunSpec], list[str]]:
    """Resolve the study's placements and return (run specs, warnings).

    Runs cross models x tasks x placements x grid points x seeds (see study/grid.py),
    model by model: a study across models expands each model as a study of its own
    (``Study.for_model``), so placements resolve by role and budgets match on each.

    target: what placements resolve against (a model, meta model or config); the
        model reference when None.
    fingerprints: model (and data) content hashes, part of every run's identity.
    scores: score name -> (layer, role) -> importance: the study's probe, needed by
        ``allocate`` placements (the driver passes the probe of the study's own data).
    task_fingerprints: dataset reference -> its data/retain/test hashes, added to the
        fingerprints of that task's runs.
    model_name: the model's label in a study across models (its runs' ``model_name``).
    """
    if study.models is not None:
        if target is not None or fingerprints or scores is not None:
            raise ValueError("expand a study across models one model at a time (for_model)")
        return expand_models(study, lambda m: {"task_fingerprints": task_fingerprints})
    target = _arch_of(study.model if target is None else target)
    specs: list[RunSpec] = []
    warnings: list[str] = []
    # Describe the model once: every placement below resolves against the same layout.
    budget = budget_params(study, target) if study.budget is not None else None
    placements = _budgeted_specs(study, target, budget, scores, warnings)
    for task in study.tasks:
        fps = {**(fingerprints or {}), **(task_fingerprints or {}).get(task.dataset, {})}
        common = dict(
            study=study.name,
            model=study.model,
            dataset=task.dataset,
            retain_dataset=retain_dataset(study, task.dataset),
            text_field=task.text_field,
            fingerprints=fps,
            task=task.name,
            quantize=study.quantize,
            data=study.data_settings(),
            eval_tasks=study.eval_task_settings(),
            eval_dataset=study.eval.dataset,
            model_name=model_name,
        )
        specs += _baselines(study, common, "zero-shot")
        labels: set[str] = set()
        for spec, generated in placements:
            specs += _placement_runs(study, spec, generated, target, common, labels, warnings)
        specs += _baselines(study, common, "full")
    return specs, warnings


def expand_models(
    study: Study, kwargs: Callable[[StudyModel], dict[str, Any]]
) -> tuple[list[RunSpec], list[str]]:
    """Every model's runs, model after model (one model stays loaded at a time), with
    ``kwargs(model)`` as that model's ``expand`` arguments; warnings name the model."""
    specs: list[RunSpec] = []
    warnings: list[str] = []
    for m in study.model_list:
        one, said = expand(study.for_model(m), model_name=m.name, **kwargs(m))
        specs += one
        label = m.name or m.ref
        warnings += [f"{label}: {w}" for w in said] if study.models is not None else said
    return specs, warnings


def _budgeted_specs(study: Study, target: Any, budget: int | None, scores, warnings) -> list:
    """(spec, generated?) per placement, each matched to the budget when there is one."""

    out = []
    dora = study.use_dora is True  # a use_dora grid axis: the budget is matched without DoRA
    for spec, generated in _placement_specs(study, target, budget, scores):
        if budget is not None:
            if generated:
                achieved = resolve(spec, target, use_dora=dora).trainable_params
            else:
                per_role = study.budget_per_role
                match = match_budget(spec, target, budget, per_role=per_role, use_dora=dora)
                spec, achieved = match.spec, match.achieved
            warnings.append(
                f"{spec.label()}: budget {budget:,} -> {achieved:,} trainable params "
                f"({achieved - budget:+,}, {100 * (achieved - budget) / budget:+.2f} %)"
                + (", generated" if generated else "")
            )
            if isinstance(study.use_dora, list) and True in study.use_dora:
                warnings.append(_dora_excess(spec, target, achieved, budget))
        out.append((spec, generated))
    return out


def _dora_excess(spec, target: Any, achieved: int, budget: int) -> str:
    """A use_dora grid shares one rank across its points, so the DoRA points exceed the
    budget by their magnitude vectors: say by how much."""

    extra = resolve(spec, target, use_dora=True).trainable_params - achieved
    return (
        f"{spec.label()}: the use_dora=true grid points train {achieved + extra:,} params "
        f"({achieved + extra - budget:+,} vs the budget): the same ranks plus {extra:,} DoRA "
        "magnitudes; set use_dora: true (not a grid) to match the budget with DoRA"
    )


def _baselines(study: Study, common: dict, kind: str) -> list[RunSpec]:
    """The zero-shot run (one per task) or the full fine-tuning runs (per lr and seed)."""
    if kind == "zero-shot":
        if not study.zero_shot:
            return []
        # Neither training settings nor seeds can change a zero-shot number: keep only what
        # evaluation reads, so a study stores one and studies that differ in training share it.
        settings = study.train_settings()
        eval_only = TrainSettings(**{k: getattr(settings, k) for k in ZERO_SHOT_FIELDS})
        return [
            RunSpec(
                placement_name="zero-shot",
                kind="zero-shot",
                seed=ZERO_SHOT_SEED,
                train=eval_only,
                **common,
            )
        ]
    if not study.full_finetune:
        return []
    lrs = grid_axes(study)["lr"]
    out = []
    for lr in lrs:
        setting = {"lr": lr} if len(lrs) > 1 else {}
        out += _seed_runs(study, "full", "full-ft", setting, study.train_settings(lr=lr), common)
    return out


def _seed_runs(study, kind, base, setting, train, common, **extra) -> list[RunSpec]:
    """One grid point's runs: a RunSpec per seed, labelled base@setting."""
    label = point_label(base, setting)
    return [
        RunSpec(
            placement_name=label,
            kind=kind,
            seed=seed,
            train=train,
            placement_base=base,
            setting=setting,
            **common,
            **extra,
        )
        for seed in study.seeds
    ]


def _placement_runs(study, spec, generated, target, common, labels, warnings) -> list[RunSpec]:
    """One placement's runs on one task: every grid point x seed."""

    own_rank = spec.rank is not None or spec.role_rank or spec.layer_rank or spec.module_rank
    own_alpha = spec.alpha is not None or spec.alpha_rule is not None
    varying = varying_axes(study)
    out = []
    for point in grid_points(study, own_rank=bool(own_rank), own_alpha=own_alpha):
        rp = resolve(
            spec,
            target,
            rank=point["rank"],
            alpha=point["alpha"],
            alpha_rule=None if own_alpha else study.alpha_rule,
            use_dora=point["use_dora"],
        )
        _check_variant(rp, point)
        if point["use_dora"] and study.train.lora_bias:
            lora_config_kwargs(rp.modules, use_dora=True, lora_bias=True)  # its one-line error
        setting = setting_of(point, varying)
        label = point_label(rp.name, setting)
        if label in labels:
            raise UserError(f"placement {label!r} appears twice in the study: name one")
        labels.add(label)
        # A generated placement picks layers on purpose: partial coverage is its point.
        for w in rp.warnings:
            line = f"{rp.name}: {w}"
            if not (generated and " layers only " in w) and line not in warnings:
                warnings.append(line)
        out += _seed_runs(
            study,
            "lora",
            rp.name,
            setting,
            study.train_settings(lr=point["lr"]),
            common,
            modules=rp.as_dicts(),
            use_rslora=rp.use_rslora or point["use_rslora"],
            use_dora=point["use_dora"],
            init_lora_weights=point["init_lora_weights"],
        )
    return out


def _check_variant(rp, point: dict) -> None:
    """Variant combinations PEFT cannot build on this model fail here, before any run."""
    if point["use_dora"] and any(m.kind == "param" for m in rp.modules):
        raise UserError(
            f"placement {rp.name!r} adapts fused expert parameters, which PEFT's DoRA does "
            "not support: set use_dora: false, or linear_only: true on the placement"
        )
    conv1d = any(m.kind == "conv1d" for m in rp.modules)
    if conv1d and point["use_dora"] and point["init_lora_weights"] == "olora":
        raise UserError(
            f"placement {rp.name!r}: init_lora_weights 'olora' with use_dora fails in PEFT "
            "on Conv1D layers (GPT-2): sweep them apart, or use pissa or gaussian with DoRA"
        )


def budget_params(study: Study, target: Any) -> int:
    """The study's budget in trainable parameters on ``target`` (it must have one)."""

    if study.budget is None:
        raise ValueError("budget_params needs a study with a budget")
    return parse_budget(study.budget, target)


def _placement_specs(study: Study, target: Any, budget: int | None, scores: Any):
    """(spec, generated?) for every placement entry, generated ones expanded."""

    for entry in study.placements:
        gen = parse_generated(entry)
        if gen is None:
            yield parse_placement(entry), False
            continue
        assert budget is not None, "validate_study rejects generated entries without a budget"
        if scores is None and isinstance(gen, AllocateEntry):
            raise UserError(
                f"placement {gen.label()!r} is allocated from probe scores, which need the "
                "model's weights and the study's data: run the study (loraplace run)"
            )
        for spec in generate(gen, target, budget, scores):
            yield spec, True
