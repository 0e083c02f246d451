"""The study: schema (what a study file may say), load (YAML, overrides, errors) and
expand (placements resolved into RunSpecs).

``from loraplace.study import X`` is the public surface; the submodules are the rooms.
"""

from __future__ import annotations

from loraplace.study.expand import (
    budget_params,
    expand,
    expand_models,
    retain_dataset,
    wants_probe,
)
from loraplace.study.read import (
    apply_overrides,
    load_study,
    parse_override,
    read_study_file,
    validate_study,
)
from loraplace.study.schema import (
    EvalConfig,
    ProbeConfig,
    SinksConfig,
    Study,
    StudyModel,
    TrainConfig,
)

__all__ = [
    "EvalConfig",
    "ProbeConfig",
    "SinksConfig",
    "Study",
    "StudyModel",
    "TrainConfig",
    "apply_overrides",
    "budget_params",
    "expand",
    "expand_models",
    "load_study",
    "parse_override",
    "read_study_file",
    "retain_dataset",
    "validate_study",
    "wants_probe",
]
