"""Same maths, fewer passes over memory: kernel swaps applied for the length of a run.

GPT-2's ``gelu_new`` (transformers' ``NewGELUActivation``) is the tanh approximation of
GELU written as eight elementwise tensor ops, each a pass over the MLP's widest
activation, forward and again backward. ``torch.nn.functional.gelu(approximate="tanh")``
computes the same formula, with the same constants, in one fused kernel; results differ
only by float rounding (transformers ships it as ``gelu_pytorch_tanh``). On a CPU, where
these passes are bound by memory bandwidth, the swap is a large share of a LoRA step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def fuse_activations(model: torch.nn.Module) -> Callable[[], None]:
    """Swap every ``NewGELUActivation`` in ``model`` for the fused kernel; returns the undo."""
    try:
        from transformers.activations import GELUTanh, NewGELUActivation
    except ImportError:  # an older transformers: nothing to swap
        return lambda: None
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is NewGELUActivation:
                swapped.append((parent, name, child))
    for parent, name, _ in swapped:
        setattr(parent, name, GELUTanh())

    def restore() -> None:
        for parent, name, child in swapped:
            setattr(parent, name, child)

    return restore


class _NextTokenNLL(torch.autograd.Function):
    """Per-row NLL of ``targets`` under ``logits`` [N, V], with a one-pass backward.

    Forward is ``cross_entropy(reduction="none")``'s own: log_softmax, then the target's
    entry. Its backward in torch allocates a zero [N, V] gradient, scatters into it, and
    runs log_softmax's backward over it: three passes over the largest tensor of a step.
    Here the gradient ``softmax * g - onehot * g`` is written over the saved log-probs in
    place (exp, scale, scatter): the same numbers (the softmax is exp of the same
    log-probs), no new [N, V] buffer, and about 2x faster on GPT-2's 50k vocabulary
    (benchmarks/bench_loss.py).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, dim=-1)
        ctx.save_for_backward(logp, targets)
        ctx.spent = False
        return -logp.gather(1, targets[:, None]).squeeze(1)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        if ctx.spent:  # the log-probs were overwritten by the first backward
            raise RuntimeError("next_token_nll supports one backward pass per forward")
        ctx.spent = True
        logp, targets = ctx.saved_tensors
        grad = logp.exp_().mul_(g[:, None])
        grad.scatter_add_(1, targets[:, None], -g[:, None])
        return grad, None


def next_token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy(logits, targets, reduction="none")`` for [N, V] logits and [N]
    targets, with a cheaper backward when gradients are needed (see _NextTokenNLL)."""
    if not (torch.is_grad_enabled() and logits.requires_grad):
        return torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    return _NextTokenNLL.apply(logits, targets)
