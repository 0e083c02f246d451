"""What a run costs: throughput, FLOPs per token and MFU (peak memory: ``memory.py``)."""

from __future__ import annotations

import functools
import os
import time

import torch

# Runs pick their device and precision here; the rules live below the built-ins, which
# pretrain with them too (loraplace/device.py).
from loraplace.device import cpu_has_native_bf16, resolve_device, resolve_precision  # noqa: F401


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_EMBEDDING_NAMES = ("wte", "wpe", "embed_tokens", "embed_positions", "embed_in")


def flops_per_token(model: torch.nn.Module, block_size: int, *, full: bool = False) -> float:
    """Training FLOPs per token, nanoGPT-style, for a LoRA or full fine-tuning step.

    N counts every weight that enters a matmul (including the lm_head, tied or not; not
    the embedding lookups). Forward = 2N + attention; backward through activations is
    as much again; weight gradients add 2 x (trainable params), which is 2N for full
    fine-tuning and tiny for LoRA. Attention: QK^T and AV cost 4 x layers x d x T forward.
    """
    cfg = getattr(model, "config", None)
    n_matmul = 0
    n_trainable = 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            n_trainable += p.numel()
        if p.dim() == 2 and not any(k in name for k in _EMBEDDING_NAMES):
            n_matmul += p.numel()
    # A tied lm_head shares the input embedding's tensor, skipped above by name, yet it
    # is the largest matmul of a small-vocabulary-heavy model: count it once.
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    if get_in and get_out and get_out() is not None and get_in() is not None:
        if get_out().weight is get_in().weight:
            n_matmul += get_out().weight.numel()
    n_layer = int(getattr(cfg, "n_layer", getattr(cfg, "num_hidden_layers", 0)) or 0)
    d_model = int(getattr(cfg, "n_embd", getattr(cfg, "hidden_size", 0)) or 0)
    attn = 4 * n_layer * d_model * block_size
    fwd = 2 * n_matmul + attn
    if full:
        return 3 * fwd
    return 2 * fwd + 2 * n_trainable


@functools.lru_cache(maxsize=4)
def measured_peak_flops(device_type: str, precision: str) -> float:
    """Matmul peak (FLOP/s) measured on this device, for MFU when none is given.

    A square matmul large enough to be compute-bound, best of a few repeats. Override it
    with the environment variable LORAPLACE_PEAK_TFLOPS (the same number for every run).
    """
    env = os.environ.get("LORAPLACE_PEAK_TFLOPS")
    if env:
        return float(env) * 1e12
    device = torch.device(device_type)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up: first call pays for kernel selection
    sync(device)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best
