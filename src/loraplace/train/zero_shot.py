"""The zero-shot baseline: one evaluation of the base model, no training run.

A zero-shot number depends only on the base model and the eval tokens, never on a seed,
so a study stores it once (``study.expand`` emits one zero-shot spec) and it is computed
by evaluation alone: the same ``evaluate_base`` whose result every trained run also
records as its ``zero_shot_loss``, so the baseline row and the runs' pairing agree.
"""

from __future__ import annotations

import math

import torch

from loraplace import metrics as names
from loraplace.data import Blocks
from loraplace.runs import RunResult, RunSpec
from loraplace.train import measure
from loraplace.train.baseline import Baseline, evaluate_base, oracle_floor
from loraplace.train.heldout import test_metrics
from loraplace.train.manifest import build_manifest


def zero_shot_result(
    spec: RunSpec,
    model: torch.nn.Module,
    blocks: Blocks,
    *,
    retain: Blocks | None = None,
    test: Blocks | None = None,
    baseline: Baseline | None = None,
    tokenizer=None,
) -> RunResult:
    """The base model's eval on the spec's val (retain, test) blocks, as a stored result.

    baseline: the evaluation, when the caller has it cached (the executors do).
    tokenizer: the model's tokenizer, for the spec's task metrics (eval.tasks).
    """
    t = spec.train
    device = measure.resolve_device(t.device)
    model.to(device)
    if baseline is None:
        baseline = evaluate_base(model, blocks, retain, t, test)
    val = baseline.val
    metrics: dict[str, float] = {
        names.EVAL_LOSS: val.loss,
        names.EVAL_PPL: math.exp(val.loss),
        names.EVAL_TOKENS: val.tokens,
        "mean_batch_ppl": val.mean_batch_ppl,
        names.ZERO_SHOT_LOSS: val.loss,
        "trainable_params": 0,
        "total_params": sum(p.numel() for p in model.parameters()),
        "trainable_pct": 0.0,
        "train_time_s": 0.0,
        "eval_time_s": val.time_s,
        "steps": 0,
        "train_tokens": 0,
    }
    floor = oracle_floor(blocks, t.max_eval_blocks)
    if floor is not None:
        metrics[names.FLOOR] = floor
    metrics.update(test_metrics(None, test, baseline.test, {"max_blocks": t.max_eval_blocks}))
    if spec.eval_tasks:
        from loraplace.train.task_metrics import spec_task_metrics

        metrics.update(spec_task_metrics(model, tokenizer, spec, blocks, test, device))
    if baseline.retain is not None:
        metrics[names.RETAIN_LOSS] = metrics[names.RETAIN_ZERO_SHOT_LOSS] = baseline.retain.loss
    manifest = build_manifest(
        device=device,
        precision=measure.resolve_precision(t.precision, device),
        fingerprints=spec.fingerprints,
        extra={"run_id": spec.run_id, "kind": spec.kind, "placement": spec.placement_name},
    )
    return RunResult(
        run_id=spec.run_id,
        status="done",
        metrics=metrics,
        curves={names.EVAL_LOSS: [(0, val.loss)]},
        manifest=manifest,
    )
