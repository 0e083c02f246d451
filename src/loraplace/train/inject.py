"""Putting a run's trainable parts on the base model, and taking them off again.

A run's adapters (with ``lora_bias`` and ``modules_to_save`` copies) and gradient
checkpointing go on a base model that the executor reuses for the next run, so taking
them off must leave it exactly as it came: PEFT's ``unload`` swaps a module-to-save for a
fresh module and unties a tied ``lm_head`` from the input embedding, so the original
modules are put back by name.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from loraplace.errors import UserError
from loraplace.placement import lora_config
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


@contextmanager
def adapted(model: torch.nn.Module, spec: RunSpec, *, fused_kernels: bool = True) -> Iterator:
    """The network a run trains, over ``model``; on exit ``model`` is exactly as it came.

    Seeds the adapter init and dropout, makes the run's parameters trainable (adapters, or
    every weight for "full"), snapshots the base weights when training edits them, and
    turns on checkpointing and fused kernels; all of it is undone on exit, error or not.
    """
    from loraplace.train.kernels import fuse_activations
    from loraplace.train.lora_kernel import fuse_lora

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
    stop_checkpointing = checkpointing(model, spec.train.grad_checkpointing)
    restore_kernels = fuse_activations(model) if fused_kernels else (lambda: None)
    restore_lora = fuse_lora(model) if fused_kernels else (lambda: None)
    try:
        yield net
    finally:
        restore_lora()
        restore_kernels()
        stop_checkpointing()
        detach()
        if pristine is not None:
            model.load_state_dict(pristine)
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()


def checkpointing(model: torch.nn.Module, on: bool) -> Callable[[], None]:
    """Turn on activation checkpointing (when asked); returns the function turning it off."""
    if not on:
        return lambda: None
    if not getattr(model, "supports_gradient_checkpointing", False) or not hasattr(
        model, "activation_checkpointing_enable"
    ):
        raise UserError(
            f"{type(model).__name__} does not support gradient checkpointing: "
            "set train.grad_checkpointing: false"
        )
    # Non-reentrant: it needs no input that requires grad, which frozen embeddings lack.
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model.activation_checkpointing_disable
