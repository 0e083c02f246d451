"""Putting a run's trainable parts on the base model, and taking them off again.

A run's adapters (with ``lora_bias`` and ``modules_to_save`` copies) and gradient
checkpointing go on a base model that the executor reuses for the next run, so taking
them off must leave it exactly as it came: PEFT's ``unload`` swaps a module-to-save for a
fresh module and unties a tied ``lm_head`` from the input embedding, so the original
modules are put back by name.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from loraplace.runs import RunSpec


def _saved_originals(model: torch.nn.Module, names: tuple[str, ...]) -> dict[str, torch.nn.Module]:
    """Every module PEFT will wrap for ``modules_to_save`` (its matching: name or suffix)."""
    out = {}
    for full, module in model.named_modules():
        if any(full == n or full.endswith("." + n) for n in names):
            out[full] = module
    return out


def attach(model: torch.nn.Module, spec: RunSpec) -> tuple[torch.nn.Module, Callable[[], None]]:
    """(the network to train, a function that restores ``model``) for a LoRA run."""
    from peft import get_peft_model

    from loraplace.placement import lora_config

    t = spec.train
    originals = _saved_originals(model, t.modules_to_save)
    config = lora_config(
        spec.modules,
        dropout=t.lora_dropout,
        use_rslora=spec.use_rslora,
        use_dora=spec.use_dora,
        init_lora_weights=spec.init_lora_weights,
        lora_bias=t.lora_bias,
        modules_to_save=t.modules_to_save,
    )
    with warnings.catch_warnings():
        # PEFT calls a transformers API deprecated in v5, and warns that a tied lm_head in
        # modules_to_save is trained untied: that is what a modules_to_save copy means.
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        warnings.filterwarnings("ignore", ".*tie_word_embeddings=True", UserWarning)
        net = get_peft_model(model, config)
    stop_checkpointing = checkpointing(model, t.grad_checkpointing)

    def detach() -> None:
        stop_checkpointing()
        net.unload()
        for name, module in originals.items():
            model.set_submodule(name, module)

    return net, detach


def checkpointing(model: torch.nn.Module, on: bool) -> Callable[[], None]:
    """Turn on activation checkpointing (when asked); returns the function turning it off."""
    if not on:
        return lambda: None
    if not getattr(model, "supports_gradient_checkpointing", False) or not hasattr(
        model, "activation_checkpointing_enable"
    ):
        from loraplace.errors import UserError

        raise UserError(
            f"{type(model).__name__} does not support gradient checkpointing: "
            "set train.grad_checkpointing: false"
        )
    # Non-reentrant: it needs no input that requires grad, which frozen embeddings lack.
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model.activation_checkpointing_disable
