"""Logits only where they are scored: the model's body, then its LM head on scored rows.

A causal LM's forward computes logits at every position, [B, L, V]; the loss reads the
next-token targets that are scored: every position but the last for raw text, only the
completion for instruction data (often 2-10 of 50-80 tokens). With real vocabularies the
head is a large share of the step (SmolLM2: about a fifth; Gemma-3-270M: over half), and
its logits and their gradient are the largest tensors of the step. So the body runs to
its final hidden states, the scored positions are gathered, and only those go through the
head (with Gemma's final logit soft-capping when the config sets it), then the NLL.

The split is the transformers convention (``base_model`` is the body, whose first output
is the normed last hidden state; ``get_output_embeddings`` is the head), checked once per
model class and config against the model's own forward on a short input: a model whose
forward does more between the two (a logit scale, say) fails the check and keeps the
plain full-logits path, so the numbers never depend on the split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from loraplace.train.kernels import next_token_nll

_CHECK_LEN = 8  # tokens of the one-off check input
_CHECK_TOL = 1e-4  # max |logit difference| of the check, fp32 (the maths is identical)


@dataclass(frozen=True)
class HeadSplit:
    """A causal LM as body (ids -> final hidden states) and head (hidden -> logits)."""

    body: torch.nn.Module
    head: torch.nn.Module
    softcap: float | None  # Gemma's final_logit_softcapping: cap * tanh(logits / cap)

    def hidden(self, x: torch.Tensor, **kw) -> torch.Tensor:
        return self.body(input_ids=x, **kw)[0]

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        out = self.head(h)
        if self.softcap:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a PEFT wrapper (adapters stay injected in it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _candidate(model: torch.nn.Module) -> HeadSplit | None:
    base = _unwrapped(model)
    body = getattr(base, "base_model", None)
    get_head = getattr(base, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if body is None or body is base or head is None:
        return None
    cap = getattr(getattr(base, "config", None), "final_logit_softcapping", None)
    return HeadSplit(body=body, head=head, softcap=float(cap) if cap else None)


# (model class, id of its config) -> (the config, kept so its id is never reused; does the
# split reproduce the model's own logits?)
_CHECKED: dict[tuple[type, int], tuple[object, bool]] = {}


@torch.no_grad()
def _agrees(model: torch.nn.Module, split: HeadSplit, kw: dict) -> bool:
    """One short forward both ways, in eval mode (no dropout), fp32 as loaded."""
    p = next(model.parameters())
    vocab = int(split.head.weight.shape[0]) if hasattr(split.head, "weight") else 2
    x = (torch.arange(_CHECK_LEN, device=p.device) * 7919 % max(1, vocab)).unsqueeze(0)
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(device_type=p.device.type, enabled=False):
            full = model(input_ids=x, **kw).logits.float()
            part = split.logits(split.hidden(x, **kw)).float()
    except Exception:  # a body that wants other inputs: keep the model's own forward
        return False
    finally:
        model.train(was_training)
    return full.shape == part.shape and bool((full - part).abs().max() <= _CHECK_TOL)


def head_split(model: torch.nn.Module, kw: dict) -> HeadSplit | None:
    """The model's (body, head), or None where only its own forward is trusted."""
    split = _candidate(model)
    if split is None:
        return None
    p = next(model.parameters(), None)
    if p is None or p.is_meta:  # a memory trace: shapes only, nothing to compare
        return split
    base = _unwrapped(model)
    key = (type(base), id(base.config))
    if key not in _CHECKED:
        _CHECKED[key] = (base.config, _agrees(model, split, kw))
    return split if _CHECKED[key][1] else None


def scored_nll(
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    h: torch.Tensor,
    x: torch.Tensor,
    scored: torch.Tensor | None,
) -> torch.Tensor:
    """Per-token NLL [B, L-1] from final hidden states h [B, L, d]: 0 where not scored.

    logits_of: the head (hidden -> logits). scored: bool [B, L-1] of the targets that
    count; None = every one (raw text).
    """
    targets = x[:, 1:]
    if scored is None:
        logits = logits_of(h[:, :-1])  # the last position predicts nothing scored
        nll = next_token_nll(logits.float().flatten(0, 1), targets.flatten())
        return nll.view(targets.shape)
    scored = scored.to(h.device)
    logits = logits_of(h[:, :-1][scored])  # [n_scored, V]: only these rows see the head
    # Upcast before the softmax: bf16 logits lose the small differences that matter here.
    nll = next_token_nll(logits.float(), targets[scored])
    return torch.zeros(targets.shape, dtype=nll.dtype, device=nll.device).masked_scatter(
        scored, nll
    )
