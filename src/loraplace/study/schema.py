"""The study schema: pydantic models for every key a study file may hold.

A study names a model, a dataset, placements, ranks and seeds, plus training and
evaluation settings. Validation checks everything that can be checked without the model
(unknown keys, types). The study id is a hash of the validated config.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loraplace import identity as ident
from loraplace.metrics import EVAL_LOSS, TEST_PREFIX
from loraplace.runs import TrainSettings

# Settings that live under ``eval:`` in the study file but in TrainSettings in a RunSpec.
_EVAL_FIELDS = {short: long for long, short in ident.EVAL_FIELDS.items()}
_STRICT = ConfigDict(extra="forbid")


_train_defaults: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(TrainSettings)}
_d = _train_defaults


class TrainConfig(BaseModel):
    """The ``train:`` section: TrainSettings field for field (units there), less the eval
    settings, which the study file keeps under ``eval:``. lr may also be a list (a grid:
    see study/grid.py). Defaults are read from TrainSettings; a test checks that the fields
    mirror it, so the two never drift."""

    model_config = _STRICT
    steps: int = _d["steps"]
    epochs: float | None = _d["epochs"]
    batch_size: int = _d["batch_size"]
    block_size: int = _d["block_size"]
    lr: float | list[float] = _d["lr"]
    schedule: Literal["cosine", "linear", "constant"] = _d["schedule"]
    warmup_steps: int = _d["warmup_steps"]
    weight_decay: float = _d["weight_decay"]
    grad_clip: float = _d["grad_clip"]
    lora_dropout: float = _d["lora_dropout"]
    precision: Literal["fp32", "bf16", "auto"] = _d["precision"]
    device: str = _d["device"]
    diverge_factor: float = _d["diverge_factor"]
    diverge_rise: float = _d["diverge_rise"]
    split_seed: int = _d["split_seed"]
    test_fraction: float = _d["test_fraction"]
    grad_accum: int = _d["grad_accum"]
    grad_checkpointing: bool = _d["grad_checkpointing"]
    lora_bias: bool = _d["lora_bias"]
    modules_to_save: tuple[str, ...] = _d["modules_to_save"]


class TaskMetricConfig(BaseModel):
    """A task metric on the val examples of instruction data (see train/task_metrics.py)."""

    model_config = _STRICT
    name: str  # the metric is stored as task:<name> (accuracy, 0..1)
    kind: Literal["exact_match", "choice", "lm-eval"] = "exact_match"
    max_new_tokens: int = Field(16, ge=1)  # generation length cap (exact_match)
    stop: list[str] = Field(default_factory=lambda: ["\n"])  # generation stops at these
    limit: int | None = Field(None, ge=1)  # score at most this many val examples
    batch_size: int = Field(64, ge=1)  # prompts per generate call
    # kind lm-eval (the optional extra loraplace[eval]): an lm-evaluation-harness task,
    # a directory of custom task YAMLs, the metric read from its results, and few-shot.
    task: str | None = None
    include_path: str | None = None
    metric: str = "acc"
    num_fewshot: int | None = Field(None, ge=0)
    # A retain task measures what training should not lose (stored as retain:<name>, kept
    # out of accuracy): the report sets its drop from zero-shot against the learning.
    retain: bool = False

    @model_validator(mode="after")
    def _lm_eval(self):
        if self.retain and self.kind != "lm-eval":
            raise ValueError(
                f"retain task {self.name!r} must read its own data: use kind lm-eval "
                "(exact_match and choice read the study's val examples)"
            )
        if self.kind != "lm-eval":
            return self
        if not self.task:
            raise ValueError(f"lm-eval task {self.name!r} needs task: the harness's task name")

        if importlib.util.find_spec("lm_eval") is None:
            raise ValueError(
                "kind lm-eval needs lm-evaluation-harness: pip install 'loraplace[eval]'"
            )
        return self


def task_dict(task: TaskMetricConfig) -> dict[str, Any]:
    """A task's settings, without the later keys at their defaults (ids stay as they were)."""
    return ident.hashed(task)


class EvalConfig(BaseModel):
    """How runs are evaluated (the final eval always uses every val block up to max_blocks)."""

    model_config = _STRICT
    every: int = _train_defaults["eval_every"]  # steps between eval-curve points; 0 = end only
    batch_size: int = _train_defaults["eval_batch_size"]  # sequences per no-grad forward pass
    max_blocks: int | None = _train_defaults["max_eval_blocks"]  # cap on eval blocks; None = all
    # Task metrics beside loss, e.g. [{name: answer, kind: exact_match}] (instruction data).
    tasks: list[TaskMetricConfig] = Field(default_factory=list)
    # A separate validation file (any format): all of it is the val set, and the
    # dataset's own val split goes unused. None = the dataset's own val split.
    dataset: str | None = None

    @field_validator("tasks")
    @classmethod
    def _distinct_tasks(cls, v):
        names = [t.name for t in v]
        if len(set(names)) != len(names):
            raise ValueError("task names must be distinct")
        return v


_DATA_FIELDS = ("text", "prompt", "completion", "instruction", "input", "output", "messages")


class DataConfig(BaseModel):
    """How instruction data is read, masked and split (data/sft.py, docs/instruct.md)."""

    model_config = _STRICT
    # Our field name -> the dataset's column, e.g. {prompt: question, completion: answer}.
    fields: dict[str, str] = Field(default_factory=dict)
    loss_on: Literal["completion", "all"] = "completion"  # tokens the loss scores
    chat_template: str | None = None  # Jinja chat template (or a .jinja file) for messages
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)  # examples held out for eval and tasks
    # Raw text: split packed blocks ("block", as before) or documents first ("document").
    split: Literal["block", "document"] = "block"
    # .txt documents: null = the file is one; blank_line = separated by blank lines; or
    # any separator string, e.g. "<|endoftext|>".
    separator: str | None = None

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, v):
        for name in v:
            if name not in _DATA_FIELDS + ("choices",):
                raise ValueError(f"unknown field {name!r}: map one of {', '.join(_DATA_FIELDS)}")
        return v


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


class DatasetEntry(BaseModel):
    """One named task of a multi-task study."""

    model_config = _STRICT
    name: str  # the task's label in tables
    dataset: str  # built-in name, local file or HF dataset id
    text_field: str | None = None  # None: the study's text_field


class ModelEntry(BaseModel):
    """One named model of a study across models."""

    model_config = _STRICT
    name: str  # the model's label in tables
    model: str  # built-in name, local directory, .gguf file or hub id


class SelectConfig(BaseModel):
    """Pick one grid point per placement (per task) by a validation metric's seed mean."""

    model_config = _STRICT
    by: str = EVAL_LOSS  # a validation metric: eval_loss or a task metric, never test_*
    per: Literal["placement"] = "placement"
    # None: min for a loss, max for other metrics; given, it must agree (check_select)
    goal: Literal["min", "max"] | None = None
    # Successive halving (study/halving.py): judge every setting at `rungs` early steps
    # (rung k at steps / reduction^(rungs - k)), keep the best 1/reduction of each
    # placement's settings by validation loss over seeds; the rest are stored as pruned.
    prune: Literal["halving"] | None = None
    rungs: int = Field(2, ge=1)
    reduction: int = Field(3, ge=2)

    @field_validator("by")
    @classmethod
    def _not_test(cls, v: str) -> str:
        if v.startswith(TEST_PREFIX):
            raise ValueError(
                "selection reads validation metrics only; the test split judges the "
                "selected settings (use eval_loss or a task metric)"
            )
        return v

    @model_validator(mode="after")
    def _halving_reads_the_loss(self):
        # The rungs evaluate validation loss only: task metrics wait for the end of a run.
        if self.prune == "halving" and self.by != EVAL_LOSS:
            raise ValueError("prune: halving judges rungs by eval_loss: set by: eval_loss")
        return self


class AnalysisConfig(BaseModel):
    """How the report judges differences."""

    model_config = _STRICT
    # Equivalence margin in the compared metric's units (nats for eval loss): pairs whose
    # difference is shown to lie within ±margin are called equivalent (TOST).
    margin: float | None = Field(None, gt=0)


InitLoraWeights = bool | Literal["gaussian", "pissa", "olora"]


def _default_placements() -> list[str | dict[str, Any]]:
    return ["seed-full", "seed-attention", "seed-ffn"]


class Study(BaseModel):
    """A placement study: what to compare, on what, with which settings."""

    model_config = _STRICT

    name: str = "study"
    model: str = "tiny-markov"  # built-in name, local directory or hub id
    # Quantize the base weights on load (bitsandbytes; QLoRA-style NF4 for 4bit, compute
    # in the run's precision). Also written model: {name: ..., quantize: 4bit}.
    quantize: Literal["4bit", "8bit"] | None = None
    dataset: str = "markov-mix"  # built-in name, local file or HF dataset id
    text_field: str = "text"  # field holding the text in .jsonl/.csv/.parquet/HF data
    # Base-distribution data for the forgetting metric: "auto" = the built-in's own
    # source when there is one; null = none.
    retain: str | None = "auto"
    # Presets ("seed-full"), "a+b" shorthand, or placement specs (dicts with roles /
    # target_modules / layers / rank ...; "name" labels the run). With a budget, also
    # {name, allocate: SCORE} (allocated from the probe) and {name, random: N, seed}
    # (N random placements of the budget): see loraplace.budget.generated.
    placements: list[str | dict[str, Any]] = Field(default_factory=_default_placements)
    # Several named tasks in one study: dataset references, or {name, dataset,
    # text_field}; the runs cross placements x tasks x seeds. Replaces ``dataset``.
    datasets: list[str | DatasetEntry] | None = None
    # Several models in one study: model references, or {name, model}; the runs cross
    # placements x models x tasks x seeds, model by model. Replaces ``model``.
    models: list[str | ModelEntry] | None = None
    # Grid axes: rank, alpha, train.lr, use_dora, use_rslora and init_lora_weights may
    # each be a list; the runs cross placements x grid points x seeds.
    rank: int | list[int] = 8  # LoRA rank, or a list to sweep (placements with own rank keep it)
    alpha: float | list[float] | None = None  # LoRA alpha; alpha_rule "fixed" (default: 2 x rank)
    use_dora: bool | list[bool] = False  # PEFT DoRA: + a magnitude vector per module
    use_rslora: bool | list[bool] = False  # PEFT rsLoRA scaling alpha / sqrt(r)
    init_lora_weights: InitLoraWeights | list[InitLoraWeights] = True  # PEFT adapter init
    # Pick one grid point per placement on validation; headline numbers then come from
    # the test split (train.test_fraction, 0.1 unless set).
    select: SelectConfig | None = None
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    alpha_rule: Literal["fixed", "2r", "rslora"] | None = None
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    zero_shot: bool = True  # the base model without adapters, evaluated once
    full_finetune: bool = False  # also fine-tune every weight (a costly baseline)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    out: str | None = None  # output directory; default runs/<name>
    # Trained adapters kept under <out>/adapters/<run id>: none, the best run's (lowest
    # eval loss), or all. Not part of any id: it changes what is kept, not the numbers.
    save: Literal["none", "best", "all"] = "best"
    # Device peak (TFLOP/s) for MFU; measured once per process when not given. Not part
    # of any run's identity: it changes how a number is reported, not the number.
    peak_tflops: float | None = None
    # CPU threads for torch (None: torch's default, one per core). Recorded in each run's
    # manifest; on a busy machine fewer threads than cores can be much faster.
    threads: int | None = None
    # Runs side by side in worker processes on this machine (executors/pool.py): a count,
    # or "auto" (on a CPU, one worker per core at one thread each when runs are small
    # enough to gain; else one). None: one run at a time in this process. Not part of
    # any id: it changes where runs execute, not what they compute.
    workers: int | Literal["auto"] | None = Field(default=None)
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

    @model_validator(mode="before")
    @classmethod
    def _model_section(cls, data):
        """``model: {name: X, quantize: 4bit}`` is the same study as model: X, quantize: 4bit."""
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            data = dict(data)
            section = dict(data.pop("model"))
            if "name" not in section:
                raise ValueError("model: give the model's name (model.name: tiny-markov, ...)")
            data["model"] = section.pop("name")
            data.update(section)  # quantize, and anything unknown for the strict check
        return data

    @field_validator("seeds", "rank", mode="before")
    @classmethod
    def _no_booleans(cls, v, info):
        # pydantic reads true as 1: `seeds: [true]` would run seed 1 without a word
        if isinstance(v, bool) or (isinstance(v, list) and any(isinstance(x, bool) for x in v)):
            raise ValueError(f"{info.field_name} takes integers, not true/false")
        return v

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v

    @model_validator(mode="after")
    def _selection_has_a_test_split(self):
        # Selection on validation is judged on a separate test split: hold one out.
        if self.select is not None and "test_fraction" not in self.train.model_fields_set:
            self.train.test_fraction = DEFAULT_TEST_FRACTION
        return self

    @property
    def tasks(self) -> list[Task]:
        """The study's tasks; one unnamed task (name None) for a single ``dataset``."""
        if self.datasets is None:
            return [Task(None, self.dataset, self.text_field)]
        return [
            Task(e, e, self.text_field)
            if isinstance(e, str)
            else Task(e.name, e.dataset, e.text_field or self.text_field)
            for e in self.datasets
        ]

    @property
    def model_list(self) -> list[StudyModel]:
        """The study's models; one unnamed model (name None) for a single ``model``."""
        if self.models is None:
            return [StudyModel(None, self.model)]
        return [
            StudyModel(e, e) if isinstance(e, str) else StudyModel(e.name, e.model)
            for e in self.models
        ]

    def for_model(self, model: StudyModel) -> Study:
        """This study on one of its models alone (what expansion and fingerprints read)."""
        if self.models is None:
            return self
        return self.model_copy(update={"model": model.ref, "models": None})

    @property
    def ranks(self) -> list[int]:
        return [self.rank] if isinstance(self.rank, int) else list(self.rank)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.name

    @property
    def study_id(self) -> str:
        """Hash of the validated config (where and how results are written excluded)."""
        return ident.study_id(self)  # which keys count: loraplace.identity.FIELDS

    def train_settings(self, lr: float | None = None) -> TrainSettings:
        """The runs' TrainSettings; with an lr grid, at ``lr`` (default: the grid's first)."""
        kw = self.train.model_dump()
        for short, long in _EVAL_FIELDS.items():
            kw[long] = getattr(self.eval, short)
        if lr is not None:
            kw["lr"] = lr
        elif isinstance(kw["lr"], list):
            kw["lr"] = kw["lr"][0]
        return TrainSettings(**kw)

    def data_settings(self) -> dict[str, Any]:
        """The ``data:`` settings that differ from the defaults (a RunSpec's ``data``)."""
        return self.data.model_dump(exclude_defaults=True)

    def eval_task_settings(self) -> tuple[dict[str, Any], ...]:
        """The ``eval.tasks`` metrics as a RunSpec's ``eval_tasks``."""
        return tuple(task_dict(t) for t in self.eval.tasks)


@dataclass(frozen=True)
class Task:
    """One task of a study: a label (None for a single-dataset study) and its data."""

    name: str | None
    dataset: str
    text_field: str


@dataclass(frozen=True)
class StudyModel:
    """One model of a study: a label (None for a single-model study) and its reference."""

    name: str | None
    ref: str


DEFAULT_TEST_FRACTION = 0.1
