"""One training run, top to bottom: inject adapters, train, evaluate, measure, restore.

The caller (an executor) owns loading: it hands in a base model and tokenised blocks,
and gets the same base model back untouched afterwards, so one loaded model serves
every run of a study. Everything a run's numbers depend on comes from its RunSpec;
the seed fixes the adapter init, dropout and the order of batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from loraplace.data import Blocks
from loraplace.metrics import (
    EVAL_LOSS,
    EVAL_PPL,
    EVAL_TOKENS,
    FLOOR,
    RETAIN_LOSS,
    RETAIN_ZERO_SHOT_LOSS,
    ZERO_SHOT_LOSS,
)
from loraplace.quantize import count_params
from loraplace.runs import RunResult, RunSpec, TrainSettings
from loraplace.schedule import scheduled_lr
from loraplace.train import measure
from loraplace.train.baseline import Baseline, eval_kw, evaluate_base, oracle_floor
from loraplace.train.batching import GROUPED_BATCHING, RAW_BATCHING, Tally, batch_order, trimmed
from loraplace.train.divergence import Diverged, LossWatch, worse_than_zero_shot
from loraplace.train.evaluate import EvalResult, autocast_context, evaluate
from loraplace.train.forward import Forward, forward_for
from loraplace.train.heldout import test_metrics
from loraplace.train.inject import adapted
from loraplace.train.manifest import build_manifest
from loraplace.train.memory import MemoryMeter
from loraplace.train.pause import Pause, Paused
from loraplace.train.prefix_cache import PrefixCache
from loraplace.train.zero_shot import zero_shot_result

# on_step(step, steps, loss, tokens_per_s): called after every optimizer step.
StepCallback = Callable[[int, int, float, float], None]


def total_steps(t: TrainSettings, n_train: int) -> int:
    """Optimizer steps of a run: ``steps``, or ``epochs`` passes over the train blocks."""
    if t.epochs is not None:
        return max(1, math.ceil(t.epochs * n_train / t.batch_size))
    return t.steps


def lr_at(step: int, t: TrainSettings, steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then decay to 0."""

    return scheduled_lr(step, lr=t.lr, warmup=t.warmup_steps, steps=steps, schedule=t.schedule)


DATA_INFO_KEYS = ("format", "loss_on", "split", "val_fraction", "scored_tokens", "dropped_tokens")

Curves = dict[str, list[tuple[int, float]]]


class _Evaluator:
    """Evaluations of the adapted network on a split's val rows, through the run's forward."""

    def __init__(self, net: torch.nn.Module, forward: Forward, kw: dict):
        self.net, self.forward, self.kw = net, forward, kw

    def __call__(self, split: str, b: Blocks) -> EvalResult:
        nll = self.forward.eval_nll(split, b.val)
        return evaluate(self.net, b.val, **self.kw, nll_fn=nll, scored=b.scored("val"))


def train_run(
    spec: RunSpec,
    model: torch.nn.Module,
    blocks: Blocks,
    *,
    retain: Blocks | None = None,
    test: Blocks | None = None,
    baseline: Baseline | None = None,
    on_step: StepCallback | None = None,
    peak_flops: float | None = None,
    prefix_cache: PrefixCache | bool = True,
    fused_kernels: bool = True,
    keep_adapter: bool = True,
    tokenizer=None,
    pause: Pause | None = None,
) -> RunResult:
    """Train and evaluate one run; ``model`` is the base model, returned to its state after.

    test: the test split (the dataset loaded with ``holdout="test"``), scored as test_*
        metrics that selection never reads; None = no test split.
    baseline: the base model's eval results, when the caller has them cached.
    peak_flops: device peak (FLOP/s) for MFU; measured on the device when None.
    prefix_cache: reuse the hidden states of adapter-free bottom layers across epochs and
        runs (True: the process-wide cache; False: off; or a PrefixCache). Same numbers
        (within float rounding); used only where eligible, see ``train/prefix_cache.py``.
    fused_kernels: run GPT-2's composed GELU as one fused kernel, and add each LoRA
        update inside its base layer's GEMM (same formulas, float rounding apart; see
        ``train/kernels.py`` and ``train/lora_kernel.py``).
    keep_adapter: return a LoRA run's trained adapter in ``RunResult.adapter`` (the
        files PEFT's save_pretrained writes) for the driver to save.
    tokenizer: the model's tokenizer, which the spec's task metrics need to read outputs.
    pause: continue from ``pause.path`` when it exists, and stop at ``pause.stop_at``
        (saving a checkpoint there and returning a ``paused`` result with the rung's
        ``rung_eval_loss``); see ``train/pause.py``.
    """
    if spec.kind == "zero-shot":  # an evaluation, not a 0-step training run
        return zero_shot_result(
            spec, model, blocks, retain=retain, test=test, baseline=baseline, tokenizer=tokenizer
        )
    t = spec.train
    device = measure.resolve_device(t.device)
    precision = measure.resolve_precision(t.precision, device)
    model.to(device)
    if baseline is None:
        baseline = evaluate_base(model, blocks, retain, t, test)
    base_params = count_params(model)  # tied weights once; 4-bit weights at their real size
    meter = MemoryMeter(device)  # this run's own memory, not the process's
    meter.start()
    curves: Curves = {"train_loss": [], EVAL_LOSS: [(0, baseline.val.loss)], "lr": []}
    metrics: dict[str, float] = {}
    stopped: Diverged | Paused | None = None
    forward, adapter = None, None
    try:
        with adapted(model, spec, fused_kernels=fused_kernels) as net:
            forward = forward_for(model, net, spec, blocks.train, precision, prefix_cache)
            evals = _Evaluator(net, forward, eval_kw(t, device, precision))
            params = _param_counts(net, base_params)
            steps = total_steps(t, blocks.train.shape[0])
            train_time, counts = _optimize(
                net, spec, blocks, forward, evals, curves, steps, on_step, pause
            )
            final, retain_eval, metrics = _final_evals(
                net, spec, baseline, evals, curves, steps, blocks, retain, test, tokenizer
            )
            memory = meter.stop()
            metrics.update(_run_metrics(final, baseline, steps, train_time, counts, params, memory))
            metrics.update(_held_out_metrics(spec, baseline, evals, blocks, retain_eval, test))
            if steps and metrics["tokens_per_s"] > 0:
                metrics["mfu"] = _mfu(net, spec, metrics["tokens_per_s"], peak_flops, device)
            if keep_adapter and spec.kind == "lora":
                from loraplace.train.save import capture

                adapter = capture(net)
    except (Diverged, Paused) as exc:
        stopped = exc
    cached = forward.cached_layers if forward is not None else 0
    manifest = _manifest(spec, model, blocks, device, precision, cached, meter.label())
    return _result(spec, stopped, metrics, curves, manifest, adapter)


def _optimize(
    net: torch.nn.Module,
    spec: RunSpec,
    blocks: Blocks,
    forward: Forward,
    evals: _Evaluator,
    curves: Curves,
    steps: int,
    on_step: StepCallback | None,
    pause: Pause | None,
) -> tuple[float, tuple[int, int]]:
    """The training loop proper: AdamW over the trainable parameters.

    Returns (seconds, (processed, scored) tokens); see ``train/batching.py``.
    """
    if not steps:
        return 0.0, (0, 0)
    t, device = spec.train, evals.kw["device"]
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=t.lr, weight_decay=t.weight_decay)
    net.train()
    watch = LossWatch(t)  # non-finite, spiking or rising loss: see divergence.py
    start, train_time = 0, 0.0
    if pause is not None:  # continue a run stopped at a rung, where it stopped
        start, train_time = pause.resume(net, opt, curves, watch)
    tally = Tally(blocks, t.grad_accum)  # tokens of the batches so far
    order = batch_order(len(blocks.train), t.batch_size, steps, spec.seed, tally.widths)
    for step, idx in enumerate(order):
        tally.add(idx)
        if step < start:
            continue  # trained before the stop: its batch is drawn and skipped
        if pause is not None and step == pause.stop_at:
            ev = evals("val", blocks)
            if curves[EVAL_LOSS][-1][0] != step:
                curves[EVAL_LOSS].append((step, ev.loss))
            pause.save(net, opt, curves, watch, step=step, train_time=train_time)
            raise Paused(step, ev.loss)
        t0 = time.perf_counter()
        lr = lr_at(step, t, steps)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = _backward(forward, blocks, idx, t, device, evals.kw["precision"])
        watch.check(step + 1, loss)
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        measure.sync(device)
        train_time += time.perf_counter() - t0
        done = step + 1
        curves["train_loss"].append((done, loss))
        curves["lr"].append((done, lr))
        if on_step is not None:
            on_step(done, steps, loss, tally.processed / train_time)
        if t.eval_every and done % t.eval_every == 0 and done < steps:
            curves[EVAL_LOSS].append((done, evals("val", blocks).loss))
    return train_time, (tally.processed, tally.scored)


def _backward(
    forward: Forward,
    blocks: Blocks,
    idx: torch.Tensor,
    t: TrainSettings,
    device: torch.device,
    precision: str,
) -> float:
    """Backpropagate one batch's loss over its grad_accum micro-batches; returns the loss.

    Raw text: every position is scored, so the mean of the micro-batches' means is the
    batch's token-weighted mean. Instruction data: each micro-batch's scored sum over the
    whole batch's scored count.
    """
    train_scored = blocks.scored("train")
    n_scored = None if train_scored is None else train_scored[idx].sum().clamp(min=1)
    loss_value = 0.0
    for micro in idx.chunk(t.grad_accum):
        rows, mask = trimmed(
            blocks.train[micro], None if train_scored is None else train_scored[micro]
        )
        x = rows.to(device, non_blocking=True)
        with autocast_context(device, precision):
            nll = forward.train_nll(micro, x, mask)  # 0 at targets not scored
        if n_scored is None:  # raw text: every target scored
            loss = nll.mean() / t.grad_accum
        else:
            loss = nll.sum() / n_scored
        loss.backward()
        loss_value += loss.item()
    return loss_value


def _final_evals(
    net: torch.nn.Module,
    spec: RunSpec,
    baseline: Baseline,
    evals: _Evaluator,
    curves: Curves,
    steps: int,
    blocks: Blocks,
    retain: Blocks | None,
    test: Blocks | None,
    tokenizer,
) -> tuple[EvalResult, EvalResult | None, dict[str, float]]:
    """(final val eval, retain eval, task metrics) of the trained network."""
    # Final evaluation: every val token (up to max_eval_blocks), token-weighted.
    final = evals("val", blocks) if steps else baseline.val
    if not math.isfinite(final.loss):
        raise Diverged(steps, final.loss)
    if steps:
        curves[EVAL_LOSS].append((steps, final.loss))
    retain_eval = None
    if retain is not None:
        retain_eval = evals("retain", retain) if steps else baseline.retain
    tasks: dict[str, float] = {}
    if spec.eval_tasks:  # accuracy beside loss, on the same val (and test) examples
        from loraplace.train.task_metrics import spec_task_metrics

        device = evals.kw["device"]
        tasks = spec_task_metrics(net, tokenizer, spec, blocks, test, device)
    return final, retain_eval, tasks


def _run_metrics(
    final: EvalResult,
    baseline: Baseline,
    steps: int,
    train_time: float,
    counts: tuple[int, int],
    params: dict[str, float],
    memory: dict[str, float],
) -> dict[str, float]:
    """A run's headline numbers: val loss beside zero-shot, size, time, memory, throughput.

    train_tokens: the non-padding tokens the run fed the model; train_scored_tokens: the
    targets its loss read (stores before these counts hold a nominal train_tokens,
    steps x batch x block, and no train_scored_tokens).
    """
    train_tokens, scored_tokens = counts
    return {
        EVAL_LOSS: final.loss,
        EVAL_PPL: math.exp(final.loss),
        EVAL_TOKENS: final.tokens,
        "mean_batch_ppl": final.mean_batch_ppl,
        ZERO_SHOT_LOSS: baseline.val.loss,
        **params,
        "train_time_s": train_time,
        "eval_time_s": final.time_s,
        "tokens_per_s": train_tokens / train_time if train_time > 0 else 0.0,
        **memory,
        "steps": steps,
        "train_tokens": train_tokens,
        "train_scored_tokens": scored_tokens,
    }


def _held_out_metrics(
    spec: RunSpec,
    baseline: Baseline,
    evals: _Evaluator,
    blocks: Blocks,
    retain_eval: EvalResult | None,
    test: Blocks | None,
) -> dict[str, float]:
    """The oracle floor, the test split's numbers and the retain set's (forgetting)."""
    out: dict[str, float] = {}
    floor = oracle_floor(blocks, spec.train.max_eval_blocks)
    if floor is not None:
        out[FLOOR] = floor
    test_nll = evals.forward.eval_nll("test", test.val) if test is not None else None
    out.update(test_metrics(evals.net, test, baseline.test, evals.kw, test_nll))
    if retain_eval is not None and baseline.retain is not None:
        out[RETAIN_LOSS] = retain_eval.loss
        out[RETAIN_ZERO_SHOT_LOSS] = baseline.retain.loss
    return out


def _param_counts(net: torch.nn.Module, base_params: int) -> dict[str, float]:
    """Trainable parameters, beside the base model's (tied weights counted once)."""
    n_trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return dict(
        trainable_params=n_trainable,
        total_params=base_params,
        trainable_pct=100.0 * n_trainable / count_params(net),
    )


def _mfu(
    net: torch.nn.Module,
    spec: RunSpec,
    tokens_per_s: float,
    peak_flops: float | None,
    device: torch.device,
) -> float:
    """Model FLOPs utilisation: the run's training FLOP/s over the device's peak."""
    precision = measure.resolve_precision(spec.train.precision, device)
    peak = peak_flops or measure.measured_peak_flops(device.type, precision)
    fpt = measure.flops_per_token(net, spec.train.block_size, full=spec.kind == "full")
    return fpt * tokens_per_s / peak


def _manifest(
    spec: RunSpec,
    model: torch.nn.Module,
    blocks: Blocks,
    device: torch.device,
    precision: str,
    prefix_layers: int,
    mem_label: str,
) -> dict:
    """How a run was made: environment, fingerprints, and what the report's Methods read."""
    extra = {
        "run_id": spec.run_id,
        "kind": spec.kind,
        "placement": spec.placement_name,
        # the architecture family, for the report's Methods (the store holds no config)
        "model_type": getattr(getattr(model, "config", None), "model_type", None),
        # how the data was read, masked and split, for the Methods (data/tokenized.py, sft.py)
        "data_info": {k: blocks.info.get(k) for k in DATA_INFO_KEYS if k in blocks.info},
        # layers served from the frozen-prefix cache (0 = plain forward passes)
        "prefix_layers_cached": prefix_layers,
        # what each step's batch holds (train/batching.py)
        "batching": RAW_BATCHING if blocks.train_labels is None else GROUPED_BATCHING,
        "peak_mem_measure": mem_label,
        **scale_settings(spec),
    }
    return build_manifest(
        device=device, precision=precision, fingerprints=spec.fingerprints, extra=extra
    )


def _result(
    spec: RunSpec,
    stopped: Diverged | Paused | None,
    metrics: dict[str, float],
    curves: Curves,
    manifest: dict,
    adapter,
) -> RunResult:
    """The stored result: done, flagged, diverged, or paused at a rung."""
    if isinstance(stopped, Paused):  # a rung's numbers, under their own names: never eval_loss
        return RunResult(
            run_id=spec.run_id,
            status="paused",
            metrics={"rung_eval_loss": stopped.eval_loss, "rung_steps": stopped.step},
            curves=curves,
            manifest=manifest,
        )
    if isinstance(stopped, Diverged):
        return RunResult(
            run_id=spec.run_id,
            status="diverged",
            curves=curves,
            manifest=manifest,
            diverged_step=stopped.step,
            error=f"diverged: {stopped}",
        )
    # Kept with its numbers, but out of every mean (see divergence.py).
    flag = worse_than_zero_shot(metrics[EVAL_LOSS], metrics.get(ZERO_SHOT_LOSS))
    return RunResult(
        run_id=spec.run_id,
        status="flagged" if flag and metrics.get("steps") else "done",
        error=flag if metrics.get("steps") else None,
        metrics=metrics,
        curves=curves,
        manifest=manifest,
        adapter=adapter,
    )


def scale_settings(spec: RunSpec) -> dict:
    """The large-model settings a run used, for its manifest."""
    t = spec.train
    return {
        "grad_accum": t.grad_accum,
        "micro_batch_size": t.batch_size // t.grad_accum,
        "grad_checkpointing": t.grad_checkpointing,
        "lora_bias": t.lora_bias,
        "modules_to_save": list(t.modules_to_save),
        "quantize": spec.quantize,
    }
