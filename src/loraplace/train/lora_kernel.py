"""Same maths, fewer passes over memory: a LoRA layer's update added inside its GEMM.

PEFT's LoRA linear computes ``base(x) + lora_B(lora_A(x)) * scaling``: the rank-r
product is written out at the layer's full output width, scaled in a second pass and
added in a third, and the backward pass scales the output-wide gradient once more. For
the small models of a CPU study (the built-ins: d=128) these elementwise passes over
[tokens, out] are a large share of a step. ``torch.addmm(base, h, B^T, alpha=scaling)``
does the scale and the add inside the GEMM that writes the output, and its backward
scales only the rank-wide gradient. Same formula: with the default scaling (alpha / r = 2,
a power of two) the scale is exact, and otherwise the numbers differ by float rounding.

Without gradients and without autocast (an fp32 evaluation) the update is folded into
the weight instead, ``x @ (W + scaling * A^T B^T)``: one GEMM at the layer's width, and the
rank-r passes over the activations are gone (an evaluation of the built-ins about 20 %
faster). Only where the batch has more rows than the merge costs (``_merge_for_eval``):
a decoding step of a few rows stays unmerged. The products differ from the unmerged ones
by float rounding only. Under autocast the merged weight would be rounded to bf16, which
can erase a small update, so bf16 evaluations stay unmerged.

Only the plain case takes the fused path (one active vanilla LoRA adapter, unmerged, no
dropout, no lora_bias, a ``nn.Linear`` or GPT-2 ``Conv1D`` base, no extra forward
arguments); every other call runs PEFT's own forward unchanged.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch


def _base_weight(base: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(weight as [in, out], bias) of a plain linear base layer; None for anything else."""
    if type(base) is torch.nn.Linear:
        return base.weight.t(), base.bias
    if type(base).__name__ == "Conv1D" and hasattr(base, "nf"):  # GPT-2: weight is [in, out]
        return base.weight, base.bias
    return None


def _plain_adapter(layer: torch.nn.Module) -> str | None:
    """The one active adapter when ``layer``'s forward is plain LoRA now, else None."""
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}):
        return None
    if not isinstance(layer.lora_dropout[name], torch.nn.Identity):
        return None
    if layer.lora_B[name].bias is not None:
        return None
    return name


def _merge_for_eval(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Fold the update into the weight: no gradient, no autocast, fp32 throughout, and
    enough rows that the rank-r passes over them, N x (in + out) values, outweigh a
    merged weight's in x out (a decoding step of a few rows stays unmerged)."""
    if torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type):
        return False
    if not x.dtype == weight.dtype == torch.float32:
        return False
    fan_in, fan_out = weight.shape
    return x.shape[0] * (fan_in + fan_out) > fan_in * fan_out


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    name = None if (args or kwargs) else _plain_adapter(self)
    base = _base_weight(self.base_layer) if name is not None else None
    if base is None:
        return type(self).forward(self, x, *args, **kwargs)
    weight, bias = base
    x2 = x.reshape(-1, x.shape[-1])
    a, b = self.lora_A[name].weight, self.lora_B[name].weight
    if _merge_for_eval(x2, weight):
        weight = torch.addmm(weight, a.t(), b.t(), alpha=self.scaling[name])
        out = x2 @ weight if bias is None else torch.addmm(bias, x2, weight)
        return out.view(*x.shape[:-1], out.shape[-1])
    result = x2 @ weight if bias is None else torch.addmm(bias, x2, weight)
    h = self._cast_input_dtype(x2, a.dtype) @ a.t()
    out = torch.addmm(result, h, b.t(), alpha=self.scaling[name])
    return out.view(*x.shape[:-1], out.shape[-1])


def fuse_lora(model: torch.nn.Module) -> Callable[[], None]:
    """Give every PEFT LoRA linear in ``model`` the fused forward; returns the undo."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:  # no PEFT: no LoRA layers
        return lambda: None
    layers = [m for m in model.modules() if type(m) is LoraLinear]
    for m in layers:
        m.forward = types.MethodType(_fused_forward, m)

    def restore() -> None:
        for m in layers:
            del m.forward

    return restore
