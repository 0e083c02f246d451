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
