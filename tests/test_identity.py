"""Run and study identity: every field decided once (loraplace.identity.FIELDS), ids pinned.

A run id that moves makes every old store re-run its finished work; a setting left out of
it makes two differently trained runs one. The pinned ids below were computed by the code
before identity had one table (scripts/identity_snapshot.py checks every shipped study).
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from loraplace import identity
from loraplace.driver import _data_kw
from loraplace.runs import RunSpec, TrainSettings
from loraplace.study import expand, load_study
from loraplace.study import schema as sc

ROOT = Path(__file__).resolve().parents[1]
FPS = {"model": "0" * 16, "data": "1" * 16}


def _nested_models(annotation) -> set[type]:
    """The pydantic model classes inside a field's type (through unions and lists)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {annotation}
    return set().union(*(_nested_models(a) for a in typing.get_args(annotation)))


def undecided(roots=(RunSpec, TrainSettings, sc.Study)) -> list[str]:
    """record.field for every hashed field without a decision, and every decision on a
    field that does not exist; nested study sections are followed from the roots."""
    out, todo, seen = [], list(roots), set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        table = identity.FIELDS.get(cls.__name__, {})
        names = identity.field_names(cls)
        out += [f"{cls.__name__}.{n}" for n in names if n not in table]
        out += [f"{cls.__name__}.{n} (no such field)" for n in table if n not in names]
        if issubclass(cls, BaseModel):
            for name, f in cls.model_fields.items():
                if table.get(name) != identity.LABEL:
                    todo += _nested_models(f.annotation)
    return sorted(out)


def test_every_field_has_an_identity_decision():
    assert undecided() == []


def test_a_field_added_without_a_decision_fails():
    @dataclasses.dataclass(frozen=True)
    class TrainSettings:  # noqa: F811 - the real one, plus a field nobody decided on
        steps: int = 1
        new_knob: float = 0.5

    class TaskMetricConfig(sc.TaskMetricConfig):
        new_metric_knob: int = 3

    class Study(sc.Study):
        eval2: TaskMetricConfig | None = None

    assert "TrainSettings.new_knob" in undecided((TrainSettings,))
    assert "TaskMetricConfig.new_metric_knob" in undecided((Study,))
    assert "Study.eval2" in undecided((Study,))


def test_every_record_class_is_decided_where_it_is_hashed():
    for cls in (
        RunSpec,
        TrainSettings,
        sc.Study,
        sc.TrainConfig,
        sc.EvalConfig,
        sc.TaskMetricConfig,
    ):
        assert set(identity.FIELDS[cls.__name__]) == set(identity.field_names(cls)), cls


def test_added_later_fields_are_dropped_at_their_class_default():
    hashed = identity.hashed(TrainSettings())
    added = [n for n, d in identity.FIELDS["TrainSettings"].items() if d == identity.ADDED]
    assert added == [
        "diverge_rise",
        "test_fraction",
        "grad_accum",
        "grad_checkpointing",
        "lora_bias",
        "modules_to_save",
    ]
    assert not set(added) & set(hashed) and hashed["steps"] == 250
    # Away from the default it counts; a list and a tuple are one value (the study file
    # gives lists, a RunSpec read back from the store tuples).
    assert identity.hashed(TrainSettings(lora_bias=True))["lora_bias"] is True
    assert identity.hashed(TrainSettings(modules_to_save=["lm_head"]))["modules_to_save"] == [
        "lm_head"
    ]
    assert "modules_to_save" not in identity.hashed(TrainSettings(modules_to_save=[]))


def test_labels_never_change_a_run_id():
    spec = RunSpec("s", "p", "lora", "tiny-markov", "markov-mix", 0)
    relabelled = dataclasses.replace(
        spec, study="t", placement_name="q", task="a", placement_base="b", setting={"lr": 1}
    )
    assert relabelled.run_id == spec.run_id == "3adce3bc83c8a744"
    assert dataclasses.replace(spec, seed=1).run_id != spec.run_id


def test_the_default_study_keeps_its_ids():
    study = load_study(None)
    assert study.study_id == "499b96e21986"
    specs, _ = expand(
        study,
        fingerprints={"model": "c767352272dcfa62"},
        task_fingerprints={
            "markov-mix": {"data": "00fa12268b785ecc", "retain": "1a29a6bbf4909b21"}
        },
    )
    ids = {(s.placement_name, s.seed): s.run_id for s in specs}
    # As `loraplace run` stores them (scripts/identity_snapshot.py, before and after).
    assert ids[("zero-shot", 0)] == "07b52162472ba65f"
    assert ids[("seed-full", 0)] == "1678d2073058cdc9"
    assert ids[("attention", 2)] == "3b9b5524babcb593"


# (file or None for the default, overrides) -> (study id, first LoRA run's id): each sets
# settings added after stores existed away from their defaults.
PINNED = [
    (None, ["train.grad_accum=2"], "7a51c124ebe5", "9167c223aa12186e"),
    (None, ["train.grad_checkpointing=true"], "d40d9c9ce6a9", "d3a13122d3f30910"),
    (None, ["train.lora_bias=true"], "955297ee156a", "e1777307e59b1526"),
    (None, ["train.modules_to_save=[lm_head]"], "51e9195def0d", "6373d6c70b0b79a0"),
    (None, ["train.diverge_rise=2.0"], "2c82704b25a9", "e681ab270c1194d1"),
    (None, ["train.test_fraction=0.2"], "0b42c26d4cbc", "c3cce4cf56cbe1f5"),
    (None, ["use_dora=true"], "83183735a3f1", "a95685ad8a4791ac"),
    (None, ["init_lora_weights=gaussian"], "59957914e5df", "aa53f39f4e75a01d"),
    (None, ["model.quantize=4bit"], "672b75dfe24d", "830ab43131684deb"),
    (None, ["data.loss_on=all", "data.val_fraction=0.2"], "05e5ee0dca09", "4cefe6a8a88dc58f"),
    (None, ["eval.dataset=examples/data/map_pc.jsonl"], "8447339526b8", "74ea83531a855f10"),
    (
        None,
        ["analysis.margin=0.01", "select.by=eval_loss", "train.lr=[0.001,0.002]"],
        "1563212e285c",
        "a2775c998dd5ed69",
    ),
    (
        "examples/instruct_map.yaml",
        ["eval.tasks=[{name: x, kind: exact_match, limit: 5}]"],
        "d728b96b14eb",
        "20610d6c1c7dd0c9",
    ),
]


@pytest.mark.parametrize("path,overrides,study_id,run_id", PINNED)
def test_added_later_settings_keep_their_ids(path, overrides, study_id, run_id):
    study = load_study(ROOT / path if path else None, overrides)
    specs, _ = expand(study, fingerprints=FPS)
    first = next(s for s in specs if s.kind == "lora")
    assert (study.study_id, first.run_id) == (study_id, run_id)
    # A RunSpec read back from the store has tuples where expand gave lists: same id.
    assert RunSpec.from_dict(first.to_dict()).run_id == run_id


def test_a_run_reads_the_blocks_the_driver_fingerprinted():
    """One blocks_args for both: the study's blocks (driver) and a spec's (Assets)."""
    study = load_study(None, ["train.test_fraction=0.2", "data.val_fraction=0.2"])
    task = study.tasks[0]
    spec = next(s for s in expand(study, fingerprints=FPS)[0] if s.kind == "lora")
    from_spec = identity.blocks_args(spec.model, spec.train, spec.text_field, spec.data)
    assert _data_kw(study, task) == from_spec
    assert from_spec == {
        "model": "tiny-markov",
        "device": "cpu",
        "block_size": 128,
        "split_seed": 0,
        "text_field": "text",
        "test_fraction": 0.2,
        "data": {"val_fraction": 0.2},
    }


def test_baseline_key_holds_what_a_zero_shot_evaluation_reads():
    spec = next(s for s in expand(load_study(None), fingerprints=FPS)[0] if s.kind == "lora")
    assert identity.baseline_key(spec, "cpu", "fp32") == (
        "tiny-markov",
        "markov-mix",
        "markov-source",
        128,
        0,
        0.0,
        "cpu",
        "fp32",
        64,
        None,
        "[]",
        None,
        None,
        "text",
    )
    # Two tasks on one file, read by different fields, are two evaluations.
    other = dataclasses.replace(spec, text_field="body")
    assert identity.baseline_key(other, "cpu", "fp32") != identity.baseline_key(spec, "cpu", "fp32")
    # A zero-shot run keeps exactly these train settings (the rest at their defaults).
    zero = next(s for s in expand(load_study(None, ["train.lr=0.1"]), fingerprints=FPS)[0])
    assert zero.kind == "zero-shot" and zero.train.lr == TrainSettings().lr


def test_the_train_section_mirrors_train_settings_field_for_field():
    """TrainConfig is written out (so mypy sees its types) but must not drift from
    TrainSettings: same fields in the same order, less the eval: ones, same types (lr may
    also be a list: a grid) and the same defaults, so study and run ids do not move."""
    from loraplace.study.schema import TrainConfig

    hints = typing.get_type_hints(TrainSettings)
    want = [
        (f.name, float | list[float] if f.name == "lr" else hints[f.name], f.default)
        for f in dataclasses.fields(TrainSettings)
        if f.name not in identity.EVAL_FIELDS
    ]
    got = [(n, f.annotation, f.default) for n, f in TrainConfig.model_fields.items()]
    assert got == want and len(got) == 20
