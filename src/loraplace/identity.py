"""What a run's and a study's identity is made of: one table, and every key built from it.

A run id hashes a ``RunSpec``; a study id hashes a ``Study``. ``FIELDS`` says, for every
field of every record either hash reads, whether it is

- ``IDENTITY``: hashed always;
- ``ADDED``: added after stores existed, hashed only away from its default, so the runs
  and studies that do not use it keep the ids their stores hold (the default is read from
  the dataclass or pydantic field, never written down twice);
- ``LABEL``: not identity (display labels, where output goes): never hashed.

``tests/test_identity.py`` fails when a record gains a field this table does not decide,
and pins run ids of the shipped studies. The in-process cache keys (a base model's
zero-shot evaluation, a dataset's token blocks) are built here too, one function each.

Torch-free and below every room that hashes: records are read by duck typing (a
dataclass, or a pydantic model's ``model_fields``), so this module imports none of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Protocol

IDENTITY = "identity"
ADDED = "added later"
LABEL = "not identity"


def _each(decision: str, names: str) -> dict[str, str]:
    return dict.fromkeys(names.split(), decision)


# Record (class name) -> field -> decision. Order within a record does not matter.
FIELDS: dict[str, dict[str, str]] = {
    "RunSpec": {
        **_each(IDENTITY, "kind model dataset seed train modules retain_dataset text_field"),
        **_each(IDENTITY, "use_rslora fingerprints"),
        **_each(ADDED, "use_dora init_lora_weights quantize data eval_tasks eval_dataset"),
        # Labels in tables: a study's name, the placement's label, the task (dataset label),
        # the placement before its grid point, the grid point, the model's label.
        **_each(LABEL, "study placement_name task placement_base setting model_name"),
    },
    "TrainSettings": {
        **_each(IDENTITY, "steps epochs batch_size block_size lr schedule warmup_steps"),
        **_each(IDENTITY, "weight_decay grad_clip lora_dropout precision device eval_every"),
        **_each(IDENTITY, "eval_batch_size max_eval_blocks diverge_factor split_seed"),
        **_each(ADDED, "diverge_rise test_fraction grad_accum grad_checkpointing lora_bias"),
        **_each(ADDED, "modules_to_save"),
    },
    "Study": {
        **_each(IDENTITY, "name model dataset text_field retain placements rank alpha"),
        **_each(IDENTITY, "alpha_rule seeds zero_shot full_finetune train eval budget"),
        **_each(IDENTITY, "budget_per_role probe"),
        **_each(ADDED, "datasets use_dora use_rslora init_lora_weights select analysis"),
        **_each(ADDED, "quantize data models"),
        # Where and how results are written, not what they are.
        **_each(LABEL, "out peak_tflops threads workers sinks save"),
    },
    # The study's train: section mirrors TrainSettings (less the eval fields, under eval:).
    "TrainConfig": {},  # filled below from TrainSettings
    "EvalConfig": {
        **_each(IDENTITY, "every batch_size max_blocks"),
        **_each(ADDED, "tasks dataset"),
    },
    "TaskMetricConfig": {
        **_each(IDENTITY, "name kind max_new_tokens stop limit batch_size"),
        **_each(ADDED, "task include_path metric num_fewshot retain"),
    },
    "DataConfig": _each(IDENTITY, "fields loss_on chat_template val_fraction split separator"),
    "SelectConfig": _each(IDENTITY, "by per goal prune rungs reduction"),
    "AnalysisConfig": _each(IDENTITY, "margin"),
    "ProbeConfig": _each(IDENTITY, "batches batch_size seed"),
    "DatasetEntry": _each(IDENTITY, "name dataset text_field"),
    "ModelEntry": _each(IDENTITY, "name model"),
}
# Train settings the study file keeps under eval: (TrainSettings name -> eval: key).
EVAL_FIELDS = {
    "eval_every": "every",
    "eval_batch_size": "batch_size",
    "max_eval_blocks": "max_blocks",
}
FIELDS["TrainConfig"] = {k: v for k, v in FIELDS["TrainSettings"].items() if k not in EVAL_FIELDS}
# The train settings a zero-shot evaluation reads (in the baseline key's order): a
# zero-shot run keeps only these, so studies that differ in training share one.
ZERO_SHOT_FIELDS = (
    "block_size",
    "split_seed",
    "test_fraction",
    "device",
    "precision",
    "eval_batch_size",
    "max_eval_blocks",
)


def field_names(cls: type) -> list[str]:
    """The fields of a dataclass or pydantic model class, in declaration order."""
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    return list(cls.model_fields)  # type: ignore[attr-defined]


def field_default(cls: type, name: str) -> Any:
    """A field's default, from the class itself (a factory is called)."""
    if dataclasses.is_dataclass(cls):
        f = {f.name: f for f in dataclasses.fields(cls)}[name]
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return f.default
    return cls.model_fields[name].get_default(call_default_factory=True)  # type: ignore[attr-defined]


def _is_record(value: Any) -> bool:
    return type(value).__name__ in FIELDS and (
        dataclasses.is_dataclass(value) or hasattr(type(value), "model_fields")
    )


def _plain(value: Any) -> Any:
    """JSON-shaped value: records reduced by ``hashed``, tuples as lists."""
    if _is_record(value):
        return hashed(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def hashed(record: Any) -> dict[str, Any]:
    """What of ``record`` its id hashes: LABEL fields out, ADDED fields at their default out.

    Nested records (a RunSpec's TrainSettings, a Study's sections) are reduced the same
    way. A pydantic model's other values are taken as its JSON dump gives them.
    """
    cls = type(record)
    table = FIELDS.get(cls.__name__)
    if table is None:
        raise TypeError(f"{cls.__name__} has no identity table in loraplace.identity.FIELDS")
    dumped = None if dataclasses.is_dataclass(record) else record.model_dump(mode="json")
    out: dict[str, Any] = {}
    for name in field_names(cls):
        decision = table.get(name)
        if decision is None:  # tests/test_identity.py catches this before a user does
            raise TypeError(f"{cls.__name__}.{name}: no identity decision in identity.FIELDS")
        if decision == LABEL:
            continue
        value = getattr(record, name)
        nested = _is_record(value) or (
            isinstance(value, (list, tuple)) and any(_is_record(v) for v in value)
        )
        value = _plain(value) if dumped is None or nested else dumped[name]
        if decision == ADDED and value == _plain(field_default(cls, name)):
            continue
        out[name] = value
    return out


def run_id(spec: Any) -> str:
    """A RunSpec's id: same spec, same id, on any machine (16 hex digits)."""
    blob = json.dumps(hashed(spec), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def study_id(study: Any) -> str:
    """A Study's id (12 hex digits): its validated config, where output goes excluded."""
    blob = json.dumps(hashed(study), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class _Train(Protocol):
    @property
    def device(self) -> str: ...
    @property
    def block_size(self) -> int: ...
    @property
    def split_seed(self) -> int: ...
    @property
    def test_fraction(self) -> float: ...


class _Spec(Protocol):
    @property
    def model(self) -> str: ...
    @property
    def dataset(self) -> str: ...
    @property
    def retain_dataset(self) -> str | None: ...
    @property
    def text_field(self) -> str: ...
    @property
    def data(self) -> dict[str, Any]: ...
    @property
    def eval_dataset(self) -> str | None: ...
    @property
    def quantize(self) -> str | None: ...
    @property
    def train(self) -> Any: ...


def baseline_key(spec: _Spec, device: str, precision: str) -> tuple:
    """The cache key of a base model's zero-shot evaluation on a RunSpec's data.

    device / precision: the spec's, resolved where the run executes ("auto" is not a key).
    """
    resolved = {"device": device, "precision": precision}
    evals = [resolved.get(name, getattr(spec.train, name)) for name in ZERO_SHOT_FIELDS]
    return (
        spec.model,
        spec.dataset,
        spec.retain_dataset,
        *evals,
        repr(sorted(spec.data.items())),
        spec.eval_dataset,
        spec.quantize,
        spec.text_field,  # two tasks may read one file by different fields
    )


def blocks_args(model: str, train: _Train, text_field: str, data: dict[str, Any]) -> dict:
    """The arguments of ``Assets.blocks`` for a run's own dataset, from its parts.

    One function for the RunSpec's blocks (what a run trains on) and the Study's (what
    the driver fingerprints before any run), so the two always read the same blocks.
    """
    return dict(
        model=model,
        device=train.device,
        block_size=train.block_size,
        split_seed=train.split_seed,
        text_field=text_field,
        test_fraction=train.test_fraction,
        data=data,
    )


def blocks_key(
    dataset: str,
    *,
    model: str,
    block_size: int,
    split_seed: int,
    text_field: str,
    test_fraction: float,
    holdout: str,
    data: dict[str, Any] | None,
) -> tuple:
    """The cache key of a dataset's token blocks (``Assets.blocks``)."""
    data_key = repr(sorted((data or {}).items()))
    return (dataset, model, block_size, split_seed, text_field, test_fraction, holdout, data_key)
