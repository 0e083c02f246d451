"""The plain records that cross module boundaries: what to run, and what a run produced.

A ``RunSpec`` is everything that determines a run's numbers; its ``run_id`` is a hash of
exactly that, so the same spec is the same run on any machine and a changed setting is a
new run. A ``RunResult`` is what comes back from a worker to the driver, which alone
writes it to the store. Both are JSON-serialisable dataclasses (Ray and SQLite carry them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from loraplace import identity as ident
from loraplace.errors import UserError

RunKind = Literal["lora", "zero-shot", "full"]
# A zero-shot run is one evaluation of the base model, which no seed can change; it is
# stored once per study under this seed.
ZERO_SHOT_SEED = 0
# flagged: trained to the end but worse than zero-shot (train/divergence.py): not averaged.
# paused: stopped at a successive-halving rung, to be continued; pruned: stopped there for
# good (its partial curves kept, never averaged).
RunStatus = Literal[
    "pending",
    "running",
    "done",
    "failed",
    "diverged",
    "flagged",
    "interrupted",
    "paused",
    "pruned",
]


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation and evaluation settings of one run (units in the comments)."""

    steps: int = 250  # optimizer steps; ignored when epochs is set
    epochs: float | None = None  # passes over the train blocks, overrides steps
    batch_size: int = 16  # sequences per step
    block_size: int = 128  # tokens per sequence
    lr: float = 2e-3  # peak learning rate of AdamW
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 20  # linear warm-up from 0 to lr
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    lora_dropout: float = 0.0
    # bf16 = autocast, weights stay fp32; auto = bf16 on CUDA and on CPUs with native
    # bf16 matmuls (AVX512-BF16/AMX), else fp32. The precision used goes in the manifest.
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    device: str = "cpu"  # cpu | cuda | mps | auto (resolved where the run executes)
    eval_every: int = 50  # steps between eval-curve points; 0 = only at the end
    eval_batch_size: int = 64  # sequences per eval forward pass (no grad)
    max_eval_blocks: int | None = None  # cap on eval blocks; None = all
    diverge_factor: float = 4.0  # one step's loss above factor x the first: diverged
    # The smoothed train loss above rise x the first step's loss: diverged (divergence.py).
    diverge_rise: float = 1.5
    split_seed: int = 0  # seed of the train/val/test split; fixed across run seeds on purpose
    # Share of blocks held out as the test split (0 = none): scored as test_* metrics that
    # the report's headline numbers read and selection never does.
    test_fraction: float = 0.0
    # Settings for large models. At their defaults they are left out of the run id, so the
    # runs of studies written before them keep their ids.
    # Micro-batches per optimizer step: batch_size (the effective batch) is split into
    # grad_accum equal slices, so the same batch_size gives the same loss curve.
    grad_accum: int = 1
    grad_checkpointing: bool = False  # recompute activations in backward: less memory, more time
    lora_bias: bool = False  # a trainable bias on every LoRA B (PEFT lora_bias): +out per module
    # Modules trained in full as copies beside the adapters (PEFT modules_to_save), e.g.
    # ["lm_head"] after adding tokens; each copy's parameters count as trainable.
    modules_to_save: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.grad_accum < 1 or self.batch_size % self.grad_accum:
            raise UserError(
                f"train.grad_accum {self.grad_accum} must be >= 1 and divide train.batch_size "
                f"{self.batch_size} (batch_size is the effective batch, split into grad_accum "
                "micro-batches)"
            )


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's numbers."""

    study: str  # study name, for display only: not part of the run id
    placement_name: str  # label in tables ("seed-full", "zero-shot", ...)
    kind: RunKind
    model: str  # model reference: built-in name, local dir or hub id
    dataset: str  # dataset reference
    seed: int
    train: TrainSettings = field(default_factory=TrainSettings)
    # The resolved placement: one dict per adapted module with keys
    # name, role, layer, in_features, out_features, rank, alpha. Empty for zero-shot/full.
    modules: tuple[dict[str, Any], ...] = ()
    retain_dataset: str | None = None  # base-distribution data for the forgetting metric
    text_field: str = "text"
    use_rslora: bool = False
    fingerprints: dict[str, str] = field(default_factory=dict)  # data/model content hashes
    use_dora: bool = False  # PEFT's weight-decomposed LoRA: adds a magnitude vector per module
    init_lora_weights: bool | str = True  # PEFT's adapter init: True, "gaussian", "pissa", ...
    # Display only, like placement_name: the task (a study's named dataset) this run is
    # on, the placement before any grid point was added to its label, and the grid point.
    task: str | None = None
    placement_base: str | None = None
    setting: dict[str, Any] = field(default_factory=dict)  # e.g. {"lr": 0.001, "rank": 8}
    # The base model's weights quantized on load (bitsandbytes NF4 / int8); None = as saved.
    quantize: Literal["4bit", "8bit"] | None = None
    # How instruction data is read and masked (data.sft.DataSettings as a dict; empty =
    # defaults), and the task metrics of eval.tasks
    # (train.task_metrics.TaskMetricSettings as dicts).
    data: dict[str, Any] = field(default_factory=dict)
    eval_tasks: tuple[dict[str, Any], ...] = ()
    # A separate validation file (eval.dataset): every row of it is the val set.
    eval_dataset: str | None = None
    # Display only: the model's label in a study across models (None: the reference).
    model_name: str | None = None

    @property
    def run_id(self) -> str:
        """A hash of the resolved spec: same spec, same id, on any machine."""
        return ident.run_id(self)

    def identity(self) -> dict[str, Any]:
        """What the run id hashes (loraplace.identity decides field by field)."""
        return ident.hashed(self)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["modules"] = list(d["modules"])
        d["eval_tasks"] = list(d["eval_tasks"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        d = dict(d)
        train = dict(d.get("train", {}))
        train["modules_to_save"] = tuple(train.get("modules_to_save", ()))
        d["train"] = TrainSettings(**train)
        d["modules"] = tuple(d.get("modules", ()))
        d["eval_tasks"] = tuple(d.get("eval_tasks", ()))
        return cls(**d)


@dataclass
class RunResult:
    """What one run produced; the driver writes it to the store."""

    run_id: str
    status: RunStatus
    # Scalar metrics, e.g. eval_loss (token-weighted mean NLL, nats), eval_ppl, eval_tokens,
    # zero_shot_loss, floor, retain_loss, trainable_params, total_params, trainable_pct,
    # train_time_s, eval_time_s, tokens_per_s, peak_mem_bytes, mfu, mean_batch_ppl.
    metrics: dict[str, float] = field(default_factory=dict)
    # Curves: name -> list of (step, value); e.g. "train_loss", "eval_loss", "lr".
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    diverged_step: int | None = None
    error: str | None = None
    # A LoRA run's trained adapter as {file name: bytes} (what PEFT's save_pretrained
    # writes); the driver saves it under the study directory or drops it (study ``save``).
    adapter: dict[str, bytes] | None = None
