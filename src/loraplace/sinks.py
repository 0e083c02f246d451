"""Optional copies of each run's numbers in MLflow or TensorBoard; the store stays the truth.

Asked for in the study file::

    sinks:
      mlflow: sqlite:///runs/mlflow.db     # an MLflow tracking URI
      tensorboard: runs/tb                 # a TensorBoard log directory

Both packages are optional (``pip install loraplace[tracking]``); a sink that cannot be
opened is a user error raised before any run starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from loraplace.errors import UserError
from loraplace.runs import RunResult, RunSpec


class Sink(Protocol):
    def log(self, spec: RunSpec, result: RunResult) -> None: ...

    def close(self) -> None: ...


def _run_name(spec: RunSpec) -> str:
    return f"{spec.placement_name}-seed{spec.seed}-{spec.run_id[:8]}"


def _params(spec: RunSpec) -> dict[str, Any]:
    """Flat parameters of a run, for a tracker's params table."""
    out: dict[str, Any] = {
        "run_id": spec.run_id,
        "placement": spec.placement_name,
        "kind": spec.kind,
        "model": spec.model,
        "dataset": spec.dataset,
        "seed": spec.seed,
        "adapted_modules": len(spec.modules),
    }
    out.update({f"train.{k}": v for k, v in spec.to_dict()["train"].items()})
    return out


class TensorBoardSink:
    """One TensorBoard run directory per loraplace run: curves by step, metrics as scalars."""

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(
                "sinks.tensorboard needs the tensorboard package: pip install loraplace[tracking]"
            ) from None
        self._writer_cls = SummaryWriter
        self.log_dir = Path(log_dir)

    def log(self, spec: RunSpec, result: RunResult) -> None:
        writer = self._writer_cls(log_dir=str(self.log_dir / _run_name(spec)))
        try:
            for name, points in result.curves.items():
                for step, value in points:
                    writer.add_scalar(f"curve/{name}", value, step)
            for name, value in result.metrics.items():
                writer.add_scalar(f"metric/{name}", value, 0)
            writer.add_text("status", result.status)
        finally:
            writer.close()

    def close(self) -> None:
        pass


class MLflowSink:
    """One MLflow run per loraplace run, in an experiment named after the study."""

    def __init__(self, tracking_uri: str, experiment: str):
        try:
            import mlflow
        except ImportError:
            raise UserError(
                "sinks.mlflow needs the mlflow package: pip install loraplace[tracking]"
            ) from None
        self.mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(experiment)

    def log(self, spec: RunSpec, result: RunResult) -> None:
        mlflow = self.mlflow
        with mlflow.start_run(run_name=_run_name(spec)):
            mlflow.log_params(_params(spec))
            mlflow.set_tag("status", result.status)
            if result.metrics:
                mlflow.log_metrics(result.metrics)
            for name, points in result.curves.items():
                for step, value in points:
                    mlflow.log_metric(f"curve.{name}", value, step=step)

    def close(self) -> None:
        pass


def open_sinks(config: dict[str, str | None], study_name: str) -> list[Sink]:
    """The sinks a study asks for (``{"mlflow": uri, "tensorboard": dir}``)."""
    sinks: list[Sink] = []
    if log_dir := config.get("tensorboard"):
        sinks.append(TensorBoardSink(log_dir))
    if uri := config.get("mlflow"):
        sinks.append(MLflowSink(uri, study_name))
    return sinks
