"""Importance scores per (layer, role) from a few batches of the study's data, no training.

Every score is read from one pass over the same seeded batches (forward and backward of
the mean token loss, weights frozen in place, nothing updated):

- ``taylor``: first-order Taylor importance, ``sum |w * dL/dw|`` over the module's weight
  (the loss change if the weight were removed, to first order). Grows with module size.
- ``lora_grad``: the expected Frobenius norm of the gradient that a fresh LoRA ``B`` would
  receive at rank 1. With ``B = 0`` and ``A`` drawn as PEFT draws it (kaiming-uniform,
  variance ``1/(3 in)``), ``dL/dB = G A^T`` with ``G = dL/dW``, so
  ``E||dL/dB||^2 = r ||G||^2 / (3 in)``; the score is ``||G|| / sqrt(3 in)``. It is how
  hard the first LoRA step pulls at that module.
- ``nfn``: PLoP's normalised feature norm (Hayou et al., ICLR 2026; the official code,
  github.com/soufiane001/plop, ``src/metrics.py``): for each probe token, its input
  ``z_t`` scaled to unit length, the ratio ``||W z^_t|| / ||W u||`` of the weight's response
  to it against its response to a random unit input ``u``; the mean over tokens. The
  random response is taken in expectation, ``E||W u||^2 = ||W||_F^2 / in`` (the code draws
  Gaussian inputs; deterministic here, and equal in expectation), so the score does not
  depend on the weight's scale or the tokens' norms: only on how well the weight is
  aligned with this data. A (layer, role) with several modules gets their mean, as the
  code averages modules of a type. PLoP adapts the module types with the *lowest* NFN
  (least aligned with the task), so its importance is ``1 / nfn``.
- ``out_norm``: the root mean square of the module's output ``W z`` (bias excluded), per
  token and coordinate: the raw feature norm, not normalised.

A score is keyed by (layer, role); when several modules share a key (layouts whose roles
could not be read: role ``other``) their sums are pooled before the ratio is taken.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict

import torch
from torch import nn

from loraplace.arch import ArchInfo, describe
from loraplace.errors import UserError
from loraplace.models import load_model
from loraplace.probe.result import SCORES, Key, ProbeResult


def pick_batches(
    blocks: torch.Tensor, *, batches: int, batch_size: int, seed: int
) -> list[torch.Tensor]:
    """``batches`` seeded batches of rows from a [N, L] block tensor (fewer if N is small)."""
    if blocks.ndim != 2 or blocks.shape[0] == 0:
        raise UserError("the probe needs at least one block of tokens: the data is empty")
    if batches < 1 or batch_size < 1:
        raise UserError("--batches and the batch size must be at least 1")
    g = torch.Generator().manual_seed(seed)
    n = min(blocks.shape[0], batches * batch_size)
    idx = torch.randperm(blocks.shape[0], generator=g)[:n]
    rows = blocks[idx]
    return [rows[i : i + batch_size] for i in range(0, n, batch_size)]


def _pool(targets: list, per_module: dict[str, dict[str, float]], n_tok: int):
    """Per-module sums pooled into (layer, role) scores, with each unit's modules and
    their weight and LoRA parameter counts."""
    taylor, g_sq = per_module["taylor"], per_module["g_sq"]  # empty: forward only
    out_sq, unit_norm = per_module["out_sq"], per_module["unit_norm"]
    w_sq = per_module["w_sq"]
    modules: dict[Key, list[str]] = defaultdict(list)
    wparams: dict[Key, int] = defaultdict(int)
    lparams: dict[Key, int] = defaultdict(int)
    pooled: dict[Key, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for m in targets:
        k = (int(m.layer), m.role)
        modules[k].append(m.name)
        wparams[k] += m.in_features * m.out_features
        lparams[k] += m.in_features + m.out_features
        acc = pooled[k]
        acc["taylor"] += taylor.get(m.name, 0.0)
        acc["lora_sq"] += g_sq.get(m.name, 0.0) / (3.0 * m.in_features)
        acc["out_sq"] += out_sq[m.name]
        # this module's nfn: the mean |W z^| over tokens against the random |W u|
        rand = math.sqrt(w_sq[m.name] / m.in_features)
        acc["nfn_sum"] += unit_norm[m.name] / n_tok / rand if rand > 0 and n_tok else 0.0
        acc["n_modules"] += 1
        acc["coords"] += n_tok * m.out_features
    scores: dict[str, dict[Key, float]] = {name: {} for name in SCORES}
    for k, acc in pooled.items():
        scores["taylor"][k] = acc["taylor"]
        scores["lora_grad"][k] = math.sqrt(acc["lora_sq"])
        scores["nfn"][k] = acc["nfn_sum"] / acc["n_modules"]
        scores["out_norm"][k] = math.sqrt(acc["out_sq"] / acc["coords"])
    return scores, modules, wparams, lparams


# Scores that need the loss's gradient (a backward pass); the others need forward passes.
GRADIENT_SCORES = ("taylor", "lora_grad")


def _passes(model: nn.Module, named: dict, targets: list, batches: list, gradients: bool):
    """Run the probe batches (the forward hooks record the feature sums); with
    ``gradients``, backward too: per-module taylor and squared-gradient sums."""
    device = next(model.parameters()).device
    n_tok = 0
    if not gradients:
        with torch.no_grad():
            for batch in batches:
                model(input_ids=batch.to(device))
                n_tok += int(batch.numel())
        return {}, {}, n_tok
    for m in targets:
        named[m.name].weight.requires_grad_(True)
    for batch in batches:
        ids = batch.to(device)
        loss = model(input_ids=ids, labels=ids).loss
        # Mean of the batch losses (equal batches: the mean over all probe tokens).
        (loss / len(batches)).backward()
        n_tok += int(ids.numel())
    taylor: dict[str, float] = {}
    g_sq: dict[str, float] = {}
    for m in targets:
        w, g = named[m.name].weight.detach().float(), named[m.name].weight.grad
        if g is None:  # a module the loss does not reach
            g = torch.zeros_like(w)
        g = g.float()
        taylor[m.name] = float((w * g).abs().sum())
        g_sq[m.name] = float((g * g).sum())
    return taylor, g_sq, n_tok


def _probe_targets(arch: ArchInfo) -> list:
    """Linear layers of the language model's blocks: hooks need modules, not fused
    parameters."""
    targets = [
        m
        for m in arch.modules
        if m.layer is not None
        and m.role != "lm_head"
        and m.kind != "param"
        and m.tower == "language"
    ]
    if not targets:
        raise UserError(f"{arch.family}: no linear layer inside the blocks to probe")
    return targets


def probe_model(
    model: nn.Module,
    batches: list[torch.Tensor],
    *,
    arch: ArchInfo | None = None,
    meta: dict | None = None,
    gradients: bool = True,
) -> ProbeResult:
    """Score every in-block linear layer of ``model`` on ``batches`` of token ids.

    The model is left as it was found (mode, requires_grad, no .grad); nothing is updated.
    gradients: False runs forward passes only (PLoP's cost) and scores nfn and out_norm.
    """
    arch = arch or describe(model)
    targets = _probe_targets(arch)
    named = dict(model.named_modules())

    # Per-module accumulators, all additive over tokens and batches.
    out_sq: dict[str, float] = defaultdict(float)  # sum_t ||W z_t||^2
    unit_norm: dict[str, float] = defaultdict(float)  # sum_t ||W z_t|| / ||z_t||

    def hook(name: str):
        def fn(mod, inputs, output):
            z = inputs[0].detach().to(torch.float32)
            wz = output.detach().to(torch.float32)
            if getattr(mod, "bias", None) is not None:
                wz = wz - mod.bias.detach().to(torch.float32)  # W z alone, as PLoP defines it
            out_sq[name] += float((wz * wz).sum())
            wz_norm = wz.reshape(-1, wz.shape[-1]).norm(dim=1)
            z_norm = z.reshape(-1, z.shape[-1]).norm(dim=1)
            # a zero input (none in practice) responds with nothing: it adds 0, as in PLoP
            unit_norm[name] += float((wz_norm / z_norm.clamp_min(1e-12)).sum())

        return fn

    was_training = model.training
    saved_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    handles = [named[m.name].register_forward_hook(hook(m.name)) for m in targets]
    t0 = time.perf_counter()
    try:
        model.eval()  # no dropout: the probe must be deterministic
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
        taylor, g_sq, n_tok = _passes(model, named, targets, batches, gradients)
    finally:
        for h in handles:
            h.remove()
        for n, p in model.named_parameters():
            p.grad = None
            p.requires_grad_(saved_grad[n])
        model.train(was_training)
    seconds = time.perf_counter() - t0
    w_sq = {m.name: float(named[m.name].weight.detach().float().square().sum()) for m in targets}
    per_module = {
        "taylor": taylor,
        "g_sq": g_sq,
        "out_sq": out_sq,
        "unit_norm": unit_norm,
        "w_sq": w_sq,
    }
    scores, modules, wparams, lparams = _pool(targets, per_module, n_tok)
    if not gradients:  # forward passes only: the gradient scores were not measured
        scores = {k: v for k, v in scores.items() if k not in GRADIENT_SCORES}
    info = {
        "family": arch.family,
        "n_layers": arch.n_layers,
        "tokens": n_tok,
        "batches": len(batches),
        "seconds": round(seconds, 3),
    }
    info.update(meta or {})
    return ProbeResult(scores, dict(modules), dict(wparams), dict(lparams), info)


def probe(
    model: str,
    dataset: str,
    *,
    batches: int = 4,
    batch_size: int = 8,
    block_size: int | None = None,
    seed: int = 0,
    split_seed: int = 0,
    text_field: str = "text",
    gradients: bool = True,
) -> ProbeResult:
    """Probe a model reference on a dataset reference (the CLI's and search's entry point).

    Args:
        batches, batch_size: how much data the probe sees (batches x batch_size blocks).
        block_size: tokens per block; default min(128, the model's context).
        seed: picks the blocks; same seed, same blocks, same scores.
        split_seed: the dataset's train/val split (as in the study).
        gradients: False for forward passes only (nfn and out_norm).
    """
    from loraplace.data import load_blocks

    torch.manual_seed(seed)
    mdl, tokenizer = load_model(model)
    max_ctx = getattr(mdl.config, "n_positions", None) or getattr(
        mdl.config, "max_position_embeddings", None
    )
    if block_size is None:  # the model's context, up to 128 tokens: a probe needs no more
        block_size = min(128, int(max_ctx)) if max_ctx else 128
    blocks = load_blocks(
        dataset,
        tokenizer,
        block_size,
        split_seed=split_seed,
        text_field=text_field,
        max_context=max_ctx,
    )
    picked = pick_batches(blocks.train, batches=batches, batch_size=batch_size, seed=seed)
    meta = {
        "model": model,
        "dataset": dataset,
        "block_size": block_size,
        "batch_size": batch_size,
        "seed": seed,
        "split_seed": split_seed,
        "data_fingerprint": blocks.fingerprint,
    }
    return probe_model(mdl, picked, meta=meta, gradients=gradients)
