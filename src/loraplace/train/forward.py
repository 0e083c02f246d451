"""A run's forward pass, chosen once: through the frozen-prefix cache, or plain.

LoRA runs whose bottom layers carry no adapter reuse those layers' hidden states
(``prefix_cache.py``); every other run calls the model. The training loop and the
evaluations ask this object for per-token NLL and never branch on which it is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from loraplace.runs import RunSpec
from loraplace.train.evaluate import token_nll
from loraplace.train.prefix_cache import PrefixCache, PrefixRunner, runner_for


class Forward:
    """Per-token NLL of the train split's batches, and the nll_fn each eval split takes."""

    def __init__(self, net: torch.nn.Module, train_rows: torch.Tensor, prefix: PrefixRunner | None):
        self.prefix = prefix
        self.cached_layers = prefix.k if prefix is not None else 0  # 0 = plain forward passes
        # (rows, x, scored mask or None) -> nll [B, L-1], 0 where not scored
        self.train_nll: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
        if prefix is None:
            self.train_nll = lambda rows, x, scored: token_nll(net, x, scored)
        else:
            self.train_nll = functools.partial(prefix.token_nll, "train", train_rows)

    def eval_nll(self, split: str, rows: torch.Tensor) -> Callable | None:
        """``evaluate``'s nll_fn for one eval split (None: the model's own forward)."""
        if self.prefix is None:
            return None
        return functools.partial(self.prefix.token_nll, split, rows)


def forward_for(
    model: torch.nn.Module,
    net: torch.nn.Module,
    spec: RunSpec,
    train_rows: torch.Tensor,
    precision: str,
    cache: PrefixCache | bool,
) -> Forward:
    """The run's forward, chosen once: LoRA runs serve adapter-free bottom layers cached.

    model: the base model (adapters injected); net: the network the run trains.
    """
    prefix = None
    if spec.kind == "lora":  # layers below the first adapter run once per block
        fingerprint = spec.fingerprints.get("model", "")
        prefix = runner_for(model, precision=precision, cache=cache, model_fingerprint=fingerprint)
    return Forward(net, train_rows, prefix)
