"""Evaluation: the token-weighted mean NLL over every scored eval token.

The loss is ``sum of per-token NLL / number of scored tokens`` over the whole eval set,
never a mean of batch means (which over-weights a short last batch). The mean of
per-batch perplexities is recorded too, only so the report can show how far the two differ.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from loraplace.train.batching import trimmed
from loraplace.train.head import head_split, scored_nll
from loraplace.train.kernels import next_token_nll


@dataclass(frozen=True)
class EvalResult:
    """Token-weighted eval loss of one model on one set of blocks."""

    loss: float  # mean NLL per scored token, nats
    tokens: int  # scored tokens (raw text: block_size - 1 per block; else the labelled ones)
    mean_batch_ppl: float  # mean over batches of exp(batch mean loss); for comparison only
    time_s: float  # wall time of the evaluation

    @property
    def ppl(self) -> float:
        return math.exp(self.loss)


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast on the device when asked for, else a no-op (weights stay fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def _forward_takes(model: torch.nn.Module) -> frozenset[str]:
    """Which of ``logits_to_keep`` / ``use_cache`` the model's forward (under PEFT) accepts."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cls = type(base)
    if cls not in _TAKES:
        params = inspect.signature(cls.forward).parameters
        _TAKES[cls] = frozenset(k for k in ("logits_to_keep", "use_cache") if k in params)
    return _TAKES[cls]


_TAKES: dict[type, frozenset[str]] = {}


def token_nll(
    model: torch.nn.Module, x: torch.Tensor, scored: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-token NLL (nats, fp32) of the next token at every position but the last: [B, L-1].

    scored: bool [B, L-1], the targets that count; only those rows go through the LM
    head, and the others read 0 (None = every target: raw text). See ``train/head.py``.
    """
    takes = _forward_takes(model)
    # No KV cache: nothing reads it, and a config's use_cache=True would otherwise keep
    # every layer's keys and values alive to the end of the forward pass (a quarter of
    # GPT-2's eval-batch peak; see train/memory_estimate.py).
    kw = {"use_cache": False} if "use_cache" in takes else {}
    split = head_split(model, kw)
    if split is not None:
        return scored_nll(split.logits, split.hidden(x, **kw), x, scored)
    if "logits_to_keep" in takes:
        # No lm_head for the last position (it predicts nothing scored), and contiguous
        # logits: slicing full logits would copy the largest tensor of the step, twice
        # more in the backward pass.
        keep = torch.arange(x.shape[1] - 1, device=x.device)
        logits = model(input_ids=x, logits_to_keep=keep, **kw).logits
    else:
        logits = model(input_ids=x, **kw).logits[:, :-1]
    targets = x[:, 1:]
    # Upcast before the softmax: bf16 logits lose the small differences that matter here.
    nll = next_token_nll(logits.float().flatten(0, 1), targets.flatten())
    nll = nll.view(targets.shape)
    return nll if scored is None else torch.where(scored.to(nll.device), nll, 0.0)


# One forward pass of an evaluation takes at most this many tokens: on 2 CPU cores the
# built-ins evaluate 15 % faster in passes of 32 x 128 tokens than of 64 x 128 (the
# activations stay in cache); and at most this much memory in fp32 logits and their
# log-softmax (Gemma-3's 262k vocabulary: 268 MB per row of 128 tokens).
PASS_TOKENS = 4096
PASS_LOGITS_BYTES = 256 << 20


def pass_rows(model: torch.nn.Module, width: int, batch_size: int) -> int:
    """Rows per forward pass of an eval batch of ``batch_size`` rows of ``width`` tokens.

    The eval batch (``eval.batch_size``) stays what the metrics are defined over (the mean
    of batch perplexities); it runs in passes sized by speed and by memory, which change
    no number beyond float rounding.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    vocab = int(head.weight.shape[0]) if head is not None and hasattr(head, "weight") else 1
    by_memory = PASS_LOGITS_BYTES // max(1, width * vocab * 8)
    return max(1, min(batch_size, PASS_TOKENS // max(1, width), by_memory))


def _nll_sum(
    model: torch.nn.Module,
    blocks: torch.Tensor,
    scored: torch.Tensor | None,
    rows: slice,
    device: torch.device,
    precision: str,
    nll_fn: Callable[..., torch.Tensor] | None,
) -> tuple[float, int]:
    """(sum of the scored NLL, scored tokens) of one forward pass over blocks[rows]."""
    part = None if scored is None else scored[rows]
    x_rows, mask = trimmed(blocks[rows], part)
    x = x_rows.to(device, non_blocking=True)
    with autocast_context(device, precision):
        if nll_fn is None:
            nll = token_nll(model, x, mask)
        else:
            nll = nll_fn(torch.arange(rows.start, rows.start + x.shape[0]), x, mask)
    if mask is not None:
        nll = nll[mask.to(nll.device)]
    return float(nll.double().sum()), nll.numel()


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    blocks: torch.Tensor,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    max_blocks: int | None = None,
    nll_fn: Callable[..., torch.Tensor] | None = None,
    scored: torch.Tensor | None = None,
) -> EvalResult:
    """Token-weighted mean NLL of ``model`` over ``blocks`` (int64 [N, L]).

    max_blocks: evaluate only the first max_blocks rows (None = all).
    nll_fn: per-token NLL of (row indices, rows on the device, scored mask) in place of
        ``token_nll(model, rows, scored)``, e.g. a frozen-prefix cache's (same numbers, less work).
    scored: bool [N, L-1], which next-token targets count (instruction data: the
        completion); None = every one. The loss is over scored tokens only, and a
        batch runs only as wide as its last scored target needs (the rest is padding
        or unscored, and causal attention never looks right).
    """

    device = torch.device(device)
    if max_blocks is not None:
        blocks = blocks[:max_blocks]
        scored = None if scored is None else scored[:max_blocks]
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    nll_sum = 0.0  # float64 accumulation: millions of tokens sum without drift
    n_tokens = 0
    batch_ppls: list[float] = []
    per_pass = pass_rows(model, blocks.shape[1], batch_size)
    n = blocks.shape[0]
    for i in range(0, n, batch_size):
        batch_sum, batch_tokens = 0.0, 0
        for j in range(i, min(i + batch_size, n), per_pass):
            rows = slice(j, min(j + per_pass, i + batch_size, n))
            part_sum, part_tokens = _nll_sum(model, blocks, scored, rows, device, precision, nll_fn)
            batch_sum, batch_tokens = batch_sum + part_sum, batch_tokens + part_tokens
        nll_sum += batch_sum
        n_tokens += batch_tokens
        batch_ppls.append(math.exp(batch_sum / max(1, batch_tokens)))
    if was_training:
        model.train()
    if n_tokens == 0:
        raise ValueError("evaluate() got no blocks")
    return EvalResult(
        loss=nll_sum / n_tokens,
        tokens=n_tokens,
        mean_batch_ppl=sum(batch_ppls) / len(batch_ppls),
        time_s=time.perf_counter() - t0,
    )
