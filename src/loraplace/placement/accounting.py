"""Trainable parameters beyond the LoRA matrices: ``lora_bias`` and ``modules_to_save``.

``ResolvedPlacement.trainable_params`` counts A and B. A run may add a bias on every B
(``out_features`` each) and full copies of whole modules (``modules_to_save``, e.g. an
``lm_head`` after adding tokens), whose every parameter trains. Both are counted from
shapes, so a model on the meta device is enough.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from loraplace.errors import UserError
from loraplace.placement.resolve import AdaptedModule, ResolvedPlacement

if TYPE_CHECKING:
    from torch import nn


def lora_bias_params(modules: Iterable[AdaptedModule]) -> int:
    """PEFT's ``lora_bias``: one bias vector on each adapted module's B."""
    return sum(m.out_features for m in modules)


def modules_to_save_params(model: nn.Module, names: Iterable[str]) -> int:
    """Parameters of the trainable copies PEFT makes for ``modules_to_save``.

    PEFT matches a name exactly or as a dotted suffix. A copy of a tied ``lm_head`` is a
    full copy: it counts although the original shares its tensor with the embedding.
    """
    total = 0
    for name in names:
        matched = [
            m for full, m in model.named_modules() if full == name or full.endswith("." + name)
        ]
        if not matched:
            raise UserError(
                f"modules_to_save names {name!r}, which matches no module of "
                f"{type(model).__name__}: use a module name such as lm_head or wte"
            )
        total += sum(p.numel() for m in matched for p in m.parameters())
    return total


def run_trainable_params(
    rp: ResolvedPlacement,
    model: nn.Module,
    *,
    lora_bias: bool = False,
    modules_to_save: Iterable[str] = (),
) -> int:
    """A run's exact trainable count: adapters, their biases and the saved-module copies."""
    extra = lora_bias_params(rp.modules) if lora_bias else 0
    return rp.trainable_params + extra + modules_to_save_params(model, modules_to_save)
