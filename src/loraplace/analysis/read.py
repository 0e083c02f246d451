"""Read one study out of the results store into plain records (the only store reader here)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loraplace.store import Store, model_budget_key

# Run kinds that carry an adapted (or fully tuned) model, as opposed to the baseline.
TRAINED_KINDS = ("lora", "full")


@dataclass(frozen=True)
class RunRecord:
    """One run as stored: its spec, status, metrics, curves and manifest."""

    run_id: str
    placement: str
    kind: str
    seed: int
    status: str
    diverged_step: int | None
    error: str | None
    spec: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status == "done"

    @property
    def modules(self) -> list[dict[str, Any]]:
        """The resolved adapted modules (name, role, layer, shapes, rank, alpha)."""
        return list(self.spec.get("modules") or ())

    def metric(self, name: str) -> float | None:
        return self.metrics.get(name)

    @property
    def task(self) -> str | None:
        """The task (named dataset) of a multi-task study; None for a single dataset."""
        return self.spec.get("task")

    @property
    def model(self) -> str:
        """The model's label: its name in a study across models, else its reference."""
        return self.spec.get("model_name") or self.spec.get("model") or ""

    @property
    def placement_base(self) -> str:
        """The placement without its grid point (the label itself when there is no grid)."""
        return self.spec.get("placement_base") or self.placement

    @property
    def setting(self) -> dict[str, Any]:
        """The run's grid point on the axes the study varies ({} without a grid)."""
        return dict(self.spec.get("setting") or {})


@dataclass(frozen=True)
class StudyData:
    """Everything the analysis needs from one study, read once."""

    store_path: Path
    study_id: str
    name: str
    config: dict[str, Any]
    command: str | None
    created_at: float
    runs: list[RunRecord]
    probe: dict[str, Any] | None = None  # the study's importance probe (ProbeResult JSON)
    budget: int | None = None  # the study's budget in parameters (budgeted studies)
    # Across models: each model's own budget (stores written before hold the first's only).
    model_budgets: dict[str, int] = field(default_factory=dict)

    def tasks(self) -> list[str | None]:
        """The study's tasks in order ([None] for a single-dataset study)."""
        return list(dict.fromkeys(r.task for r in self.runs)) or [None]

    def for_task(self, task: str | None) -> StudyData:
        """The same study with only ``task``'s runs (what every per-task table reads)."""
        return dataclasses.replace(self, runs=[r for r in self.runs if r.task == task])

    def models(self) -> list[str]:
        """The study's models in order (their labels; one for a single-model study)."""
        return list(dict.fromkeys(r.model for r in self.runs))

    def for_model(self, model: str) -> StudyData:
        """The same study with only ``model``'s runs (what every per-model table reads)."""
        return dataclasses.replace(self, runs=[r for r in self.runs if r.model == model])

    def placements(self) -> list[str]:
        """Trained placements in study order (first appearance)."""
        seen: dict[str, None] = {}
        for r in self.runs:
            if r.kind in TRAINED_KINDS:
                seen.setdefault(r.placement, None)
        return list(seen)


def read_study_data(path: str | Path, study: str | None = None) -> StudyData:
    """Read a study (the most recent unless ``study`` names one) from a store or output dir."""
    store = Store(path, create=False, writer=False)
    try:
        meta = store.study(study)
        runs = []
        metrics = store.metrics()
        for r in store.runs(meta["study_id"]):
            rid = r["run_id"]
            runs.append(
                RunRecord(
                    run_id=rid,
                    placement=r["placement"],
                    kind=r["kind"],
                    seed=int(r["seed"]),
                    status=r["status"],
                    diverged_step=r["diverged_step"],
                    error=r["error"],
                    spec=r["spec"],
                    # A diverged run's numbers are never used, even if some were stored.
                    metrics=metrics.get(rid, {}) if r["status"] == "done" else {},
                    curves=store.curves(rid),
                    manifest=store.manifest(rid),
                )
            )
        return StudyData(
            store_path=store.path,
            study_id=meta["study_id"],
            name=meta["name"],
            config=json.loads(meta["config_json"]),
            command=meta["command"],
            created_at=float(meta["created_at"]),
            runs=runs,
            probe=store.probe(meta["study_id"]),
            budget=_int(store.get_meta(f"budget:{meta['study_id']}")),
            model_budgets=_model_budgets(store, meta["study_id"], runs),
        )
    finally:
        store.close()


def _model_budgets(store: Any, study_id: str, runs: list[RunRecord]) -> dict[str, int]:
    out = {}
    for m in dict.fromkeys(r.model for r in runs):
        n = _int(store.get_meta(model_budget_key(study_id, m)))
        if n is not None:
            out[m] = n
    return out


def _int(v: str | None) -> int | None:
    return int(v) if v is not None else None
