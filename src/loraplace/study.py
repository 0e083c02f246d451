"""The study file: a validated schema, ``key=value`` overrides, and expansion into RunSpecs.

A study names a model, a dataset, placements, ranks and seeds, plus training and
evaluation settings. Loading validates everything that can be checked without the model
(unknown keys, types); ``expand`` resolves the placements against the model and returns
one RunSpec per (placement x rank x seed), plus the zero-shot (and optional full
fine-tuning) baselines. The study id is a hash of the validated config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from loraplace.errors import UserError, closest
from loraplace.runs import RunSpec, TrainSettings

# Settings that live under ``eval:`` in the study file but in TrainSettings in a RunSpec.
_EVAL_FIELDS = {
    "every": "eval_every",
    "batch_size": "eval_batch_size",
    "max_blocks": "max_eval_blocks",
}
_STRICT = ConfigDict(extra="forbid")
# The settings a zero-shot run's numbers depend on.
_EVAL_IDENTITY = (
    "block_size",
    "precision",
    "device",
    "eval_batch_size",
    "max_eval_blocks",
    "split_seed",
)


def _fields_of(cls, skip: set[str]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {
        f.name: (hints[f.name], f.default) for f in dataclasses.fields(cls) if f.name not in skip
    }


# The ``train:`` section mirrors TrainSettings field for field, so the two never drift.
TrainConfig = create_model(
    "TrainConfig",
    __config__=_STRICT,
    **_fields_of(TrainSettings, set(_EVAL_FIELDS.values())),
)
_train_defaults = {f.name: f.default for f in dataclasses.fields(TrainSettings)}


class EvalConfig(BaseModel):
    """How runs are evaluated (the final eval always uses every val block up to max_blocks)."""

    model_config = _STRICT
    every: int = _train_defaults["eval_every"]  # steps between eval-curve points; 0 = end only
    batch_size: int = _train_defaults["eval_batch_size"]  # sequences per no-grad forward pass
    max_blocks: int | None = _train_defaults["max_eval_blocks"]  # cap on eval blocks; None = all


class SinksConfig(BaseModel):
    """Where else to log each run (the store stays the source of truth)."""

    model_config = _STRICT
    mlflow: str | None = None  # tracking URI, e.g. sqlite:///runs/mlflow.db
    tensorboard: str | None = None  # log directory


class ProbeConfig(BaseModel):
    """Importance probes scored before training (see ``loraplace probe``): stored with the
    study, set against trained single-role placements in the report, and the scores that
    ``allocate`` placements spend the budget by."""

    model_config = _STRICT
    batches: int = Field(4, ge=1)  # batches of train blocks the probe sees
    batch_size: int = Field(8, ge=1)  # blocks per batch
    seed: int = 0  # picks the blocks: same seed, same scores


class Study(BaseModel):
    """A placement study: what to compare, on what, with which settings."""

    model_config = _STRICT

    name: str = "study"
    model: str = "tiny-markov"  # built-in name, local directory or hub id
    dataset: str = "markov-mix"  # built-in name, local file or HF dataset id
    text_field: str = "text"  # field holding the text in .jsonl/.csv/.parquet/HF data
    # Base-distribution data for the forgetting metric: "auto" = the built-in's own
    # source when there is one; null = none.
    retain: str | None = "auto"
    # Presets ("seed-full"), "a+b" shorthand, or placement specs (dicts with roles /
    # target_modules / layers / rank ...; "name" labels the run). With a budget, also
    # {name, allocate: SCORE} (allocated from the probe) and {name, random: N, seed}
    # (N random placements of the budget): see loraplace.budget.generated.
    placements: list[str | dict[str, Any]] = Field(
        default_factory=lambda: ["seed-full", "seed-attention", "seed-ffn"]
    )
    rank: int | list[int] = 8  # LoRA rank, or a list to sweep (placements with own rank keep it)
    alpha: float | None = None  # LoRA alpha; with alpha_rule "fixed" (default rule: 2 x rank)
    alpha_rule: Literal["fixed", "2r", "rslora"] | None = None
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    zero_shot: bool = True  # the base model without adapters, once per seed
    full_finetune: bool = False  # also fine-tune every weight (a costly baseline)
    train: TrainConfig = Field(default_factory=TrainConfig)  # type: ignore[valid-type]
    eval: EvalConfig = Field(default_factory=EvalConfig)
    out: str | None = None  # output directory; default runs/<name>
    # Device peak (TFLOP/s) for MFU; measured once per process when not given. Not part
    # of any run's identity: it changes how a number is reported, not the number.
    peak_tflops: float | None = None
    # CPU threads for torch (None: torch's default, one per core). Recorded in each run's
    # manifest; on a busy machine fewer threads than cores can be much faster.
    threads: int | None = None
    # Optional copies of every run's numbers: {"mlflow": tracking URI, "tensorboard": dir}.
    sinks: SinksConfig = Field(default_factory=lambda: SinksConfig())
    # Equal-budget comparison: every placement gets the rank (per-role ranks with
    # budget_per_role) that brings its exact trainable count closest to this budget
    # without exceeding it. A count (1966080, "2M"), a percentage of the model in PEFT's
    # convention ("0.55%"), or a placement at a rank on this model ("seed-ffn@r16").
    budget: int | str | None = None
    budget_per_role: bool = False
    # Score every (layer, role) with importance probes before training; the scores are
    # stored and the report sets them against trained single-role placements. Implied
    # (with defaults) by an ``allocate`` placement.
    probe: ProbeConfig | None = None

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v

    @property
    def wants_probe(self) -> bool:
        from loraplace.budget.generated import AllocateEntry, parse_generated

        return self.probe is not None or any(
            isinstance(parse_generated(e), AllocateEntry) for e in self.placements
        )

    @property
    def ranks(self) -> list[int]:
        return [self.rank] if isinstance(self.rank, int) else list(self.rank)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.name

    @property
    def study_id(self) -> str:
        """Hash of the validated config (where and how results are written excluded)."""
        cfg = self.model_dump(mode="json", exclude={"out", "peak_tflops", "threads", "sinks"})
        blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def train_settings(self) -> TrainSettings:
        kw = self.train.model_dump()
        for short, long in _EVAL_FIELDS.items():
            kw[long] = getattr(self.eval, short)
        return TrainSettings(**kw)

    def retain_dataset(self) -> str | None:
        if self.retain != "auto":
            return self.retain
        try:
            from loraplace.data import retain_dataset_for
        except ImportError:
            return None
        return retain_dataset_for(self.dataset)


# ------------------------------------------------------------------ loading and overrides
def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=1e-3`` -> (["train", "lr"], 0.001); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"override {text!r} is not key=value (e.g. train.lr=1e-3 seeds=[0,1])")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a copy of the raw config (validation comes after)."""
    out = json.loads(json.dumps(config))  # deep copy of plain YAML data
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return out


def read_study_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"study file {p} does not exist: give a .yaml study (see examples/)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"study file {p} is not valid YAML: {first}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"study file {p} must be a mapping of keys (name:, model:, ...)")
    return data


def validate_study(config: dict[str, Any], source: str = "study") -> Study:
    """Validate a raw config into a Study; the first problem becomes one clear line."""
    if isinstance(config.get("placements"), dict):  # {label: spec} is accepted too
        config = dict(config)
        config["placements"] = [
            {"name": k, **v} if isinstance(v, dict) else {"name": k, "preset": v}
            for k, v in config["placements"].items()
        ]
    try:
        study = Study.model_validate(config)
    except ValidationError as exc:
        raise UserError(f"{source}: {_explain(exc)}") from None
    if not study.placements and not study.zero_shot and not study.full_finetune:
        raise UserError(f"{source}: the study has no placements and no baselines: add placements")
    if not study.seeds:
        raise UserError(f"{source}: seeds is empty: give at least one, e.g. seeds: [0]")
    from loraplace.budget.generated import parse_generated

    for entry in study.placements:
        gen = parse_generated(entry)  # a malformed allocate/random entry fails here
        if gen is not None and study.budget is None:
            raise UserError(
                f"{source}: placement {entry!r} is generated at the study's budget, but the "
                "study has none: add budget: (a count, '0.55%' or 'seed-ffn@r8')"
            )
    return study


def load_study(path: str | Path | None, overrides: list[str] | None = None) -> Study:
    """Read a study file (or the built-in default when path is None) and apply overrides."""
    from loraplace.defaults import default_study_config

    if path is None:
        config, source = default_study_config(), "default study"
    else:
        config, source = read_study_file(path), str(path)
    config = apply_overrides(config, overrides or [])
    return validate_study(config, source)


def _explain(exc: ValidationError) -> str:
    errors = exc.errors()
    # A union reports one error per branch: the deepest one says most (rank.1, not rank).
    first = errors[0]["loc"][:1]
    err = max((e for e in errors if e["loc"][:1] == first), key=lambda e: len(e["loc"]))
    loc = [str(x) for x in err["loc"]]
    key = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(loc[:-1])
        hint = closest(loc[-1], valid)
        return f"unknown key {key!r}{hint}; valid keys here: {', '.join(valid)}"
    if err["type"] == "missing":
        return f"missing key {key!r}"
    # Union types report one error per branch; the last element of loc may be the branch.
    loc = [p for p in loc if not any(c in p for c in "[]") and p not in ("int", "str", "float")]
    key = ".".join(loc)
    got = err.get("input")
    got_s = json.dumps(got, default=str)
    if len(got_s) > 40:
        got_s = got_s[:37] + "..."
    return f"key {key!r}: {err['msg'].rstrip('.')} (got {got_s})"


def _valid_keys(loc: list[str]) -> list[str]:
    model: Any = Study
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


# ------------------------------------------------------------------ expansion
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
        # Training settings cannot change a zero-shot number: keep only what evaluation
        # reads, so studies that differ in training share their zero-shot runs.
        eval_only = TrainSettings(**{k: getattr(settings, k) for k in _EVAL_IDENTITY})
        for seed in study.seeds:
            zs = {**common, "train": eval_only}
            specs.append(RunSpec(placement_name="zero-shot", kind="zero-shot", seed=seed, **zs))
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
