"""One training run, top to bottom: inject adapters, train, evaluate, measure, restore.

The caller (an executor) owns loading: it hands in a base model and tokenised blocks,
and gets the same base model back untouched afterwards, so one loaded model serves
every run of a study. Everything a run's numbers depend on comes from its RunSpec;
the seed fixes the adapter init, dropout and the order of batches.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from loraplace.data import Blocks
from loraplace.quantize import count_params
from loraplace.runs import RunResult, RunSpec, TrainSettings
from loraplace.train import measure
from loraplace.train.divergence import Diverged, LossWatch, worse_than_zero_shot
from loraplace.train.evaluate import (
    EvalResult,
    autocast_context,
    evaluate,
    token_nll,
)
from loraplace.train.heldout import test_metrics
from loraplace.train.inject import attach, checkpointing
from loraplace.train.kernels import fuse_activations
from loraplace.train.manifest import build_manifest
from loraplace.train.memory import MemoryMeter
from loraplace.train.pause import Pause, Paused
from loraplace.train.prefix_cache import PrefixCache, runner_for

# on_step(step, steps, loss, tokens_per_s): called after every optimizer step.
StepCallback = Callable[[int, int, float, float], None]


@dataclass
class Baseline:
    """The base model's eval results, computed once per (model, data) and shared by runs."""

    val: EvalResult
    retain: EvalResult | None = None
    test: EvalResult | None = None  # the test split, when the run has one


def total_steps(t: TrainSettings, n_train: int) -> int:
    """Optimizer steps of a run: ``steps``, or ``epochs`` passes over the train blocks."""
    if t.epochs is not None:
        return max(1, math.ceil(t.epochs * n_train / t.batch_size))
    return t.steps


def lr_at(step: int, t: TrainSettings, steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then decay to 0."""
    from loraplace.train.schedule import scheduled_lr

    return scheduled_lr(step, lr=t.lr, warmup=t.warmup_steps, steps=steps, schedule=t.schedule)


def batches(n: int, batch_size: int, steps: int, seed: int):
    """Row indices of each step's batch: shuffled epochs, reshuffled at each epoch's end."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > n:  # drop the ragged tail: every batch has batch_size rows
            order = torch.randperm(n, generator=g)
            pos = 0
        yield order[pos : pos + batch_size]
        pos += batch_size


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
    precision = measure.resolve_precision(t.precision, device)
    kw = dict(
        batch_size=t.eval_batch_size,
        device=device,
        precision=precision,
        max_blocks=t.max_eval_blocks,
    )
    restore_kernels = fuse_activations(model)  # the same kernels as the runs use
    try:
        val = _eval_val(model, blocks, kw)
        ret = _eval_val(model, retain, kw)
        tst = _eval_val(model, test, kw)
    finally:
        restore_kernels()
    return Baseline(val=val, retain=ret, test=tst)


DATA_INFO_KEYS = ("format", "loss_on", "split", "val_fraction", "scored_tokens", "dropped_tokens")


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
    fused_kernels: run GPT-2's composed GELU as one fused kernel (same formula, float
        rounding apart; see ``train/kernels.py``).
    keep_adapter: return a LoRA run's trained adapter in ``RunResult.adapter`` (the
        files PEFT's save_pretrained writes) for the driver to save.
    tokenizer: the model's tokenizer, which the spec's task metrics need to read outputs.
    pause: continue from ``pause.path`` when it exists, and stop at ``pause.stop_at``
        (saving a checkpoint there and returning a ``paused`` result with the rung's
        ``rung_eval_loss``); see ``train/pause.py``.
    """
    if spec.kind == "zero-shot":  # an evaluation, not a 0-step training run
        from loraplace.train.zero_shot import zero_shot_result

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

    torch.manual_seed(spec.seed)  # adapter init and dropout
    for p in model.parameters():
        p.requires_grad_(spec.kind == "full")
    pristine = None
    # Full fine-tuning edits the base weights, and so do PiSSA/OLoRA inits (they move the
    # principal part of each adapted weight into the adapter): keep a copy to restore.
    if spec.kind == "full" or spec.init_lora_weights not in (True, False, "gaussian"):
        pristine = {k: v.detach().clone() for k, v in model.state_dict().items()}
    net, detach = model, (lambda: None)
    if spec.kind == "lora":  # adapters, lora_bias and modules_to_save copies
        net, detach = attach(model, spec)
    stop_checkpointing = checkpointing(model, t.grad_checkpointing)
    adapter = None

    curves: dict[str, list[tuple[int, float]]] = {"train_loss": [], "eval_loss": [], "lr": []}
    metrics: dict[str, float] = {}
    diverged: Diverged | None = None
    paused: Paused | None = None
    prefix = None
    restore_kernels = fuse_activations(model) if fused_kernels else (lambda: None)
    try:
        if spec.kind == "lora":  # layers below the first adapter run once per block
            prefix = runner_for(
                model,
                precision=precision,
                cache=prefix_cache,
                model_fingerprint=spec.fingerprints.get("model", ""),
            )
        val_nll = retain_nll = None
        if prefix is not None:
            val_nll = functools.partial(prefix.token_nll, "val", blocks.val)
            if retain is not None:
                retain_nll = functools.partial(prefix.token_nll, "retain", retain.val)
        trainable = [p for p in net.parameters() if p.requires_grad]
        n_trainable = sum(p.numel() for p in trainable)
        n_all = count_params(net)
        steps = total_steps(t, blocks.train.shape[0])
        tokens_per_step = t.batch_size * t.block_size
        train_time = 0.0
        eval_kw = dict(
            batch_size=t.eval_batch_size,
            device=device,
            precision=precision,
            max_blocks=t.max_eval_blocks,
        )
        train_scored, val_scored = blocks.scored("train"), blocks.scored("val")
        curves["eval_loss"].append((0, baseline.val.loss))

        if steps:
            # AdamW over the adapter (or, for "full", all) parameters only.
            opt = torch.optim.AdamW(trainable, lr=t.lr, weight_decay=t.weight_decay)
            net.train()
            watch = LossWatch(t)  # non-finite, spiking or rising loss: see divergence.py
            start = 0
            if pause is not None:  # continue a run stopped at a rung, where it stopped
                start, train_time = pause.resume(net, opt, curves, watch)
            for step, idx in enumerate(
                batches(blocks.train.shape[0], t.batch_size, steps, spec.seed)
            ):
                if step < start:
                    continue  # trained before the stop: its batch is drawn and skipped
                if pause is not None and step == pause.stop_at:
                    ev = evaluate(net, blocks.val, **eval_kw, nll_fn=val_nll, scored=val_scored)
                    if curves["eval_loss"][-1][0] != step:
                        curves["eval_loss"].append((step, ev.loss))
                    pause.save(net, opt, curves, watch, step=step, train_time=train_time)
                    raise Paused(step, ev.loss)
                t0 = time.perf_counter()
                lr = lr_at(step, t, steps)
                for group in opt.param_groups:
                    group["lr"] = lr
                loss_value = 0.0
                # grad_accum equal micro-batches. Raw text: every position is scored, so the
                # mean of their means is the batch's token-weighted mean. Instruction data:
                # each micro-batch's scored sum over the whole batch's scored count.
                n_scored = None if train_scored is None else train_scored[idx].sum().clamp(min=1)
                for micro in idx.chunk(t.grad_accum):
                    x = blocks.train[micro].to(device, non_blocking=True)
                    with autocast_context(device, precision):
                        if prefix is not None:
                            nll = prefix.token_nll("train", blocks.train, micro, x)
                        else:
                            nll = token_nll(net, x)
                    if n_scored is None:
                        loss = nll.mean() / t.grad_accum
                    else:
                        loss = (nll * train_scored[micro].to(nll.device)).sum() / n_scored
                    loss.backward()
                    loss_value += loss.item()
                watch.check(step + 1, loss_value)
                if t.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(trainable, t.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                measure.sync(device)
                train_time += time.perf_counter() - t0
                done = step + 1
                curves["train_loss"].append((done, loss_value))
                curves["lr"].append((done, lr))
                if on_step is not None:
                    on_step(done, steps, loss_value, done * tokens_per_step / train_time)
                if t.eval_every and done % t.eval_every == 0 and done < steps:
                    ev = evaluate(net, blocks.val, **eval_kw, nll_fn=val_nll, scored=val_scored)
                    curves["eval_loss"].append((done, ev.loss))

        # Final evaluation: every val token (up to max_eval_blocks), token-weighted.
        final = (
            evaluate(net, blocks.val, **eval_kw, nll_fn=val_nll, scored=val_scored)
            if steps
            else baseline.val
        )
        if not math.isfinite(final.loss):
            raise Diverged(steps, final.loss)
        if steps:
            curves["eval_loss"].append((steps, final.loss))
        retain_eval = None
        if retain is not None:
            retain_eval = (
                evaluate(net, retain.val, **eval_kw, nll_fn=retain_nll, scored=retain.scored("val"))
                if steps
                else baseline.retain
            )

        if spec.eval_tasks:  # accuracy beside loss, on the same val (and test) examples
            from loraplace.train.tasks import spec_task_metrics

            metrics.update(spec_task_metrics(net, tokenizer, spec, blocks, test, device))
        train_tokens = steps * tokens_per_step
        tokens_per_s = train_tokens / train_time if train_time > 0 else 0.0
        metrics.update(
            eval_loss=final.loss,
            eval_ppl=math.exp(final.loss),
            eval_tokens=final.tokens,
            mean_batch_ppl=final.mean_batch_ppl,
            zero_shot_loss=baseline.val.loss,
            trainable_params=n_trainable,
            total_params=base_params,
            trainable_pct=100.0 * n_trainable / n_all,
            train_time_s=train_time,
            eval_time_s=final.time_s,
            tokens_per_s=tokens_per_s,
            **meter.stop(),
            steps=steps,
            train_tokens=train_tokens,
        )
        floor = oracle_floor(blocks, t.max_eval_blocks)
        if floor is not None:
            metrics["floor"] = floor
        test_nll = (
            functools.partial(prefix.token_nll, "test", test.val) if prefix and test else None
        )
        metrics.update(test_metrics(net, test, baseline.test, eval_kw, test_nll))
        if retain_eval is not None and baseline.retain is not None:
            metrics["retain_loss"] = retain_eval.loss
            metrics["retain_zero_shot_loss"] = baseline.retain.loss
        if steps and tokens_per_s > 0:
            peak = peak_flops or measure.measured_peak_flops(device.type, precision)
            fpt = measure.flops_per_token(net, t.block_size, full=spec.kind == "full")
            metrics["mfu"] = fpt * tokens_per_s / peak
        if keep_adapter and spec.kind == "lora":
            from loraplace.train.save import capture

            adapter = capture(net)
    except Diverged as exc:
        diverged = exc
    except Paused as exc:
        paused = exc
    finally:
        # Give the caller its base model back exactly as it came.
        restore_kernels()
        stop_checkpointing()
        detach()
        if pristine is not None:
            model.load_state_dict(pristine)
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()

    manifest = build_manifest(
        device=device,
        precision=precision,
        fingerprints=spec.fingerprints,
        extra={
            "run_id": spec.run_id,
            "kind": spec.kind,
            "placement": spec.placement_name,
            # the architecture family, for the report's Methods (the store holds no config)
            "model_type": getattr(getattr(model, "config", None), "model_type", None),
            # how the data was read, masked and split, for the Methods (data/load.py, sft.py)
            "data_info": {k: blocks.info.get(k) for k in DATA_INFO_KEYS if k in blocks.info},
            # layers served from the frozen-prefix cache (0 = plain forward passes)
            "prefix_layers_cached": prefix.k if prefix is not None else 0,
            "peak_mem_measure": meter.label(),
            **scale_settings(spec),
        },
    )
    if paused is not None:  # a rung's numbers, under their own names: never an eval_loss
        return RunResult(
            run_id=spec.run_id,
            status="paused",
            metrics={"rung_eval_loss": paused.eval_loss, "rung_steps": paused.step},
            curves=curves,
            manifest=manifest,
        )
    if diverged is not None:
        return RunResult(
            run_id=spec.run_id,
            status="diverged",
            curves=curves,
            manifest=manifest,
            diverged_step=diverged.step,
            error=f"diverged: {diverged}",
        )
    # Kept with its numbers, but out of every mean (see divergence.py).
    flag = worse_than_zero_shot(metrics["eval_loss"], metrics.get("zero_shot_loss"))
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


def oracle_floor(blocks: Blocks, max_blocks: int | None) -> float | None:
    """The oracle's mean NLL on exactly the val tokens evaluated (synthetic data only)."""
    if blocks.val_oracle_nll is None:
        return None
    return float(blocks.val_oracle_nll[:max_blocks].mean())
