"""Expansion: a validated Study resolved against the model into RunSpecs.

One RunSpec per (placement x rank x seed), plus the zero-shot (and optional full
fine-tuning) baselines.
"""

from __future__ import annotations

from typing import Any

from loraplace.errors import UserError
from loraplace.runs import ZERO_SHOT_SEED, RunSpec, TrainSettings
from loraplace.study.schema import Study

# The settings a zero-shot run's numbers depend on.
_EVAL_IDENTITY = (
    "block_size",
    "precision",
    "device",
    "eval_batch_size",
    "max_eval_blocks",
    "split_seed",
)


def expand(
    study: Study,
    *,
    target: Any = None,
    fingerprints: dict[str, str] | None = None,
    scores: Any = None,
) -> tuple[list[RunSpec], list[str]]:
    """Resolve the study's placements and return (run specs, warnings).

    target: what placements resolve against (a model, meta model or config); the
        model reference when None.
    fingerprints: data/model content hashes, part of every run's identity.
    scores: score name -> (layer, role) -> importance: the study's probe, needed by
        ``allocate`` placements (the driver passes the probe of the study's own data).
    """
    from loraplace.placement import resolve
    from loraplace.placement.resolve import _arch_of

    target = study.model if target is None else target
    settings = study.train_settings()
    fps = dict(fingerprints or {})
    retain = study.retain_dataset()
    common = dict(
        study=study.name,
        model=study.model,
        dataset=study.dataset,
        train=settings,
        retain_dataset=retain,
        text_field=study.text_field,
        fingerprints=fps,
    )
    specs: list[RunSpec] = []
    warnings: list[str] = []
    if study.zero_shot:
        # Neither training settings nor seeds can change a zero-shot number: keep only what
        # evaluation reads, so a study stores one and studies that differ in training share it.
        eval_only = TrainSettings(**{k: getattr(settings, k) for k in _EVAL_IDENTITY})
        zs = {**common, "train": eval_only}
        specs.append(
            RunSpec(placement_name="zero-shot", kind="zero-shot", seed=ZERO_SHOT_SEED, **zs)
        )
    labels: set[str] = set()
    # Describe the model once: every placement below resolves against the same layout.
    target = _arch_of(target)
    budget = budget_params(study, target) if study.budget is not None else None
    for spec, generated in _placement_specs(study, target, budget, scores):
        if budget is not None:
            if generated:
                achieved = resolve(spec, target).trainable_params
            else:
                from loraplace.budget import match_budget_report

                match = match_budget_report(spec, target, budget, per_role=study.budget_per_role)
                spec, achieved = match.spec, match.achieved
            warnings.append(
                f"{spec.label()}: budget {budget:,} -> {achieved:,} trainable params "
                f"({achieved - budget:+,}, {100 * (achieved - budget) / budget:+.2f} %)"
                + (", generated" if generated else "")
            )
        own_rank = spec.rank is not None or spec.role_rank or spec.layer_rank or spec.module_rank
        own_alpha = spec.alpha is not None or spec.alpha_rule is not None
        ranks = [None] if own_rank else study.ranks
        for rank in ranks:
            rp = resolve(
                spec,
                target,
                rank=rank,
                alpha=None if own_alpha else study.alpha,
                alpha_rule=None if own_alpha else study.alpha_rule,
            )
            label = rp.name if len(ranks) == 1 else f"{rp.name}@r{rank}"
            if label in labels:
                raise UserError(f"placement {label!r} appears twice in the study: name one")
            labels.add(label)
            # A generated placement picks layers on purpose: partial coverage is its point.
            warnings.extend(
                f"{label}: {w}" for w in rp.warnings if not (generated and " layers only " in w)
            )
            for seed in study.seeds:
                specs.append(
                    RunSpec(
                        placement_name=label,
                        kind="lora",
                        seed=seed,
                        modules=rp.as_dicts(),
                        use_rslora=rp.use_rslora,
                        **common,
                    )
                )
    if study.full_finetune:
        for seed in study.seeds:
            specs.append(RunSpec(placement_name="full-ft", kind="full", seed=seed, **common))
    return specs, warnings


def budget_params(study: Study, target: Any) -> int:
    """The study's budget in trainable parameters on ``target`` (it must have one)."""
    from loraplace.budget import parse_budget

    return parse_budget(study.budget, target)


def _placement_specs(study: Study, target: Any, budget: int | None, scores: Any):
    """(spec, generated?) for every placement entry, generated ones expanded."""
    from loraplace.budget.generated import AllocateEntry, generate, parse_generated
    from loraplace.placement import parse_placement

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
