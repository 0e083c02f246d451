"""The base model's evaluation, computed once per (model, data) and shared: every trained
run's starting point and zero-shot reference, and the zero-shot run itself."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from loraplace.data import Blocks
from loraplace.runs import TrainSettings
from loraplace.train import measure
from loraplace.train.evaluate import EvalResult, evaluate
from loraplace.train.kernels import fuse_activations


@dataclass
class Baseline:
    """The base model's eval results, computed once per (model, data) and shared by runs."""

    val: EvalResult
    retain: EvalResult | None = None
    test: EvalResult | None = None  # the test split, when the run has one


def eval_kw(t: TrainSettings, device: torch.device, precision: str) -> dict:
    """The evaluation settings every eval of a run shares."""
    return dict(
        batch_size=t.eval_batch_size,
        device=device,
        precision=precision,
        max_blocks=t.max_eval_blocks,
    )


def _eval_val(model: torch.nn.Module, blocks: Blocks | None, kw: dict) -> EvalResult | None:
    """Eval loss on a Blocks' val rows over their scored tokens (None without blocks)."""
    if blocks is None:
        return None
    return evaluate(model, blocks.val, **kw, scored=blocks.scored("val"))


def evaluate_base(
    model: torch.nn.Module,
    blocks: Blocks,
    retain: Blocks | None,
    t: TrainSettings,
    test: Blocks | None = None,
) -> Baseline:
    """Zero-shot eval of the base model on the val blocks (and the retain and test sets)."""
    device = measure.resolve_device(t.device)
    kw = eval_kw(t, device, measure.resolve_precision(t.precision, device))
    restore_kernels = fuse_activations(model)  # the same kernels as the runs use
    try:
        val = evaluate(model, blocks.val, **kw, scored=blocks.scored("val"))
        ret = _eval_val(model, retain, kw)
        tst = _eval_val(model, test, kw)
    finally:
        restore_kernels()
    return Baseline(val=val, retain=ret, test=tst)


def oracle_floor(blocks: Blocks, max_blocks: int | None) -> float | None:
    """The oracle's mean NLL on exactly the val tokens evaluated (synthetic data only)."""
    if blocks.val_oracle_nll is None:
        return None
    return float(blocks.val_oracle_nll[:max_blocks].mean())
