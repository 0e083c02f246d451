"""How much memory training a placement takes, estimated before any weight is loaded.

The model is built on the meta device (shapes only, instant) with the placement's adapters,
and one training step and one evaluation batch are run on meta tensors under a dispatch
mode that counts the bytes of every tensor alive at once. That gives, for the real
architecture and placement rather than a formula:
- weights: the base model's parameters, quantized linear weights at their packed size;
- adapter and optimizer: the trainable parameters in fp32 and AdamW's two moments;
- train_peak: the peak of activations, gradients and temporaries over one micro-batch's
  forward and backward pass (the adapters' gradients included);
- eval_peak: the peak of one no-grad evaluation batch (eval batches are often larger).
A run's own memory is adapter + optimizer + the larger peak.

The trace runs what the run runs: the model's own attention kernel (eager for the
built-ins, as their bf16 runs use it; their fp32 runs use sdpa, whose fused kernel keeps
less, so there the estimate is an upper bound; a config copy keeps
``_attn_implementation``, which ``to_dict`` drops), an eval batch in the passes
``evaluate`` runs it in (``pass_rows``), no KV
cache (``token_nll`` asks for none), and with gradient checkpointing the checkpointed
layers themselves, recomputation in the backward pass included. On tiny-markov the
estimate is within 0.3 % of the live-tensor peak of the same run on real CPU tensors,
and the traced peaks of a tiny GPT-2 equal the real ones byte for byte (tests).

Not counted, because no tensor holds it: on CPU, the pages of torch's code that the run
executes for the first time (backward, optimizer and checkpointing kernels: they stay in
RSS as file-backed pages, 4-8 MiB at the peak on tiny-markov) and heap the C allocator
keeps (1-2 MiB). Measured RSS growth minus live tensors is 6-10 MiB there, whatever the
batch, so a CPU run measures 4-10 % above ``run_bytes`` (benchmarks/RESULTS.md). Not
added: it is the framework's, not the placement's, and on CUDA (where
``max_memory_allocated`` counts tensors only) it does not exist; the CUDA context and the
allocator's rounding (``max_memory_reserved``) are not estimated either.

On meta tensors sdpa takes its math path and keeps T x T attention probabilities that
the fused kernels of a real CPU or GPU do not, and the fused kernels keep other tensors:
for sdpa models the attention part differs (by under 3 % of a tiny GPT-2's step peak).
Tensors are counted in fp32; bf16 autocast halves many of them, so for bf16 runs this is
an upper bound.

The LM head runs where ``token_nll`` runs it (``train/head.py``): at every position but
the last, as raw text scores them. Completion-only instruction data scores a few positions
a row, so its logits and their gradient are far smaller than traced here: for such data
the estimate is an upper bound too.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from loraplace.models import meta_model
from loraplace.placement.accounting import run_trainable_params
from loraplace.placement.peft_config import lora_config
from loraplace.placement.resolve import ResolvedPlacement
from loraplace.quantize import weight_bytes
from loraplace.train.evaluate import pass_rows, token_nll
from loraplace.train.inject import checkpointing

ADAM_STATES = 2  # exp_avg and exp_avg_sq, fp32, one each per trainable parameter
FP32 = 4


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of each part of a training run's peak memory (see the module docstring)."""

    weights: int
    adapter: int
    optimizer: int
    train_peak: int
    eval_peak: int

    @property
    def run_bytes(self) -> int:
        """What a run adds to an already loaded base model (compare: CPU RSS growth)."""
        return self.adapter + self.optimizer + max(self.train_peak, self.eval_peak)

    @property
    def total(self) -> int:
        """Weights plus the run (compare: CUDA max_memory_allocated)."""
        return self.weights + self.run_bytes

    def to_json(self) -> dict[str, int]:
        return {**asdict(self), "run_bytes": self.run_bytes, "total": self.total}


class LiveBytes(TorchDispatchMode):
    """The peak bytes of tensor storages alive at once over the ops run under the mode.

    A storage counts from the op that creates it until the last tensor viewing it is
    garbage collected (tracked with weak references); ``exclude`` storages (parameters)
    are never counted.

    A meta tensor has no values, and transformers reads one at a few data-dependent
    checks (``(mask == 0).all()``: is any sequence packed or padded?). A boolean read on
    meta answers True, as contiguous unpadded token blocks, the runs' batches, would.
    """

    def __init__(self, exclude: set[int]):
        super().__init__()
        self.exclude = exclude
        self.refs: dict[int, list[int]] = {}  # storage -> [tensors alive, bytes]
        self.live = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.refs[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self.refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and args[0].is_meta:
            # A yes/no read of a meta tensor has no value: answer True. That is right for
            # transformers' packed-sequence check, the one read on this path today; a model
            # that branched on a data check (say ``isinf(h).any()``) would be traced down the
            # True branch, so only the estimate could go wrong, never a run.
            if args[0].dtype != torch.bool:
                raise NotImplementedError(f"a value of a meta tensor ({args[0].dtype}) was read")
            return True
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self.exclude:
                continue
            if key not in self.refs:
                self.refs[key] = [0, storage.nbytes()]
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
            self.refs[key][0] += 1
            weakref.finalize(t, self._release, key)
        return out


def _linear_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Weight name -> (out, in) of every linear layer the quantizer replaces."""
    from transformers.pytorch_utils import Conv1D

    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            out[f"{name}.weight"] = (m.out_features, m.in_features)
        elif isinstance(m, Conv1D):
            out[f"{name}.weight"] = (m.nf, m.weight.shape[0])
    return out


def weight_bytes_of(model: nn.Module, quantize: str | None, dtype_bytes: int = FP32) -> int:
    """The base model's weights; a quantized base keeps its LM head and embeddings as loaded."""

    shapes = _linear_shapes(model)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_w = getattr(head, "weight", None)
    total = 0
    seen: set[int] = set()
    for name, p in model.named_parameters():  # tied weights are yielded once
        if id(p) in seen:
            continue
        seen.add(id(p))
        if quantize and name in shapes and p is not head_w:
            total += weight_bytes([shapes[name]], quantize)
        else:
            total += p.numel() * dtype_bytes
    return total


def peak_bytes(net: nn.Module, batch: int, block: int, *, train: bool, device="meta") -> int:
    """Peak live bytes of one batch's loss (forward and backward when ``train``).

    device: "meta" for the estimate; a real device measures the same step on real tensors.
    """
    params = {p.untyped_storage()._cdata for p in net.parameters()}
    x = torch.zeros(batch, block, dtype=torch.long, device=device)
    mode = LiveBytes(params)
    with torch.set_grad_enabled(train), mode:
        loss = token_nll(net, x).mean()
        if train:
            loss.backward()
    return mode.peak


def estimate_memory(
    config: Any,
    rp: ResolvedPlacement,
    *,
    batch_size: int,
    block_size: int,
    eval_batch_size: int = 64,
    grad_accum: int = 1,
    grad_checkpointing: bool = False,
    quantize: str | None = None,
    lora_bias: bool = False,
    modules_to_save: Iterable[str] = (),
    dropout: float = 0.0,
) -> MemoryEstimate:
    """Peak training memory of ``rp`` on the model of ``config`` (a transformers config).

    DoRA (``rp.use_dora``) is traced as PEFT runs it: its magnitudes are adapter bytes,
    and the weight norm it takes every forward pass is activation memory.
    """
    from peft import get_peft_model

    config = copy.deepcopy(config)  # a copy (the trace edits it) with its attention kernel
    config.pad_token_id = None  # transformers' padding check reads values meta tensors lack
    model = meta_model(config)
    weights = weight_bytes_of(model, quantize)
    mts = list(modules_to_save)
    trainable = run_trainable_params(rp, model, lora_bias=lora_bias, modules_to_save=mts)
    for p in model.parameters():
        p.requires_grad_(False)
    with warnings.catch_warnings():  # PEFT calls a transformers API deprecated in v5
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        warnings.filterwarnings("ignore", ".*tie_word_embeddings=True", UserWarning)
        kw = dict(lora_bias=lora_bias, modules_to_save=mts, dropout=dropout)
        net = get_peft_model(model, lora_config(rp.modules, use_dora=rp.use_dora, **kw))
    stop_checkpointing = checkpointing(model, grad_checkpointing)  # as the run turns it on
    try:
        net.train()  # dropout as in training
        train_peak = peak_bytes(net, batch_size // grad_accum, block_size, train=True)
    finally:
        stop_checkpointing()
    net.eval()  # as evaluate() runs it
    return MemoryEstimate(
        weights=weights,
        adapter=trainable * FP32,
        optimizer=ADAM_STATES * trainable * FP32,
        train_peak=train_peak,
        # an eval batch runs in passes of pass_rows rows (train/evaluate.py), as here
        eval_peak=peak_bytes(
            net, pass_rows(net, block_size, eval_batch_size), block_size, train=False
        ),
    )
