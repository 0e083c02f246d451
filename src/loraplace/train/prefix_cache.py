"""Frozen-prefix reuse: compute the adapter-free bottom layers once per block, then reuse.

When a placement leaves layers 0..k-1 without adapters, those layers (and the embeddings)
are frozen and, with their dropout off, deterministic: the hidden state entering layer k
is the same for a block at every epoch and in every run of a study that shares the base
model and the data. ``PrefixCache`` keeps those hidden states in memory (bounded, least
recently used entries evicted first), filled lazily the first time each block is seen;
``PrefixRunner`` then runs only layers k..N-1, the final norm and the head.

Only the GPT-2 layout is served (``transformer.wte/wpe/h/ln_f`` + ``lm_head``); any other
model, a prefix with dropout, or a split too large for the bound falls back to the plain
forward pass, with the same numbers. lora_dropout does not matter: it lives in the
adapted layers, which always run.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import torch

from loraplace.train.head import scored_nll

CACHE_MB_ENV = "LORAPLACE_PREFIX_CACHE_MB"  # memory bound in MiB; 0 disables prefix reuse
DEFAULT_CACHE_MB = 2048


@dataclass
class _Entry:
    hidden: torch.Tensor  # [n_blocks, block_size, d_model], the input of layer k
    filled: torch.Tensor  # bool [n_blocks]: rows computed so far

    @property
    def nbytes(self) -> int:
        return self.hidden.numel() * self.hidden.element_size()


class PrefixCache:
    """Hidden states after the frozen prefix, keyed by (model, data, split, k, precision).

    max_bytes: bound on the cached tensors; entries are evicted least recently used first,
        and a split that alone exceeds the bound is not cached at all.
    """

    def __init__(self, max_bytes: int | None = None):
        if max_bytes is None:
            max_bytes = int(os.environ.get(CACHE_MB_ENV, DEFAULT_CACHE_MB)) * 1024**2
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self.hits = 0  # rows served from the cache
        self.misses = 0  # rows computed through the prefix

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def clear(self) -> None:
        self._entries.clear()

    def entry(self, key: tuple, shape: tuple[int, ...], device: torch.device) -> _Entry | None:
        """The entry for key (created empty if new), or None when it cannot fit the bound."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        nbytes = 4 * int(torch.Size(shape).numel())  # float32
        if nbytes > self.max_bytes:
            return None
        while self._entries and self.nbytes + nbytes > self.max_bytes:
            self._entries.popitem(last=False)
        # torch.empty claims pages only as rows are written: a half-seen split costs half.
        e = _Entry(
            hidden=torch.empty(shape, dtype=torch.float32, device=device),
            filled=torch.zeros(shape[0], dtype=torch.bool),
        )
        self._entries[key] = e
        return e


_shared: PrefixCache | None = None


def shared_cache() -> PrefixCache:
    """The process-wide cache, shared by every run in this process (one study's runs)."""
    global _shared
    if _shared is None:
        _shared = PrefixCache()
    return _shared


def _gpt2_core(model: torch.nn.Module):
    """The GPT-2 body (wte, wpe, drop, h, ln_f) of an LM-head model, or None."""
    core = getattr(model, "transformer", None)
    parts = ("wte", "wpe", "drop", "h", "ln_f")
    if core is None or not all(hasattr(core, p) for p in parts):
        return None
    if getattr(model, "lm_head", None) is None:
        return None
    if getattr(core.config, "add_cross_attention", False):
        return None
    return core


def frozen_prefix_layers(model: torch.nn.Module) -> int:
    """k: how many leading layers can be served from the cache (0 = not eligible).

    Call after adapters are injected: the prefix is every layer before the first one
    holding a trainable parameter, provided the embeddings are frozen and no dropout
    in the prefix is active (it would make the prefix output random).
    """
    core = _gpt2_core(model)
    if core is None:
        return 0
    if any(p.requires_grad for m in (core.wte, core.wpe) for p in m.parameters()):
        return 0
    k = 0
    for block in core.h:
        if any(p.requires_grad for p in block.parameters()):
            break
        k += 1
    prefix = [core.drop, *core.h[:k]]
    for m in prefix:
        for sub in m.modules():
            if isinstance(sub, torch.nn.Dropout) and sub.p > 0:
                return 0
    return k


def _signature(tensors: list[torch.Tensor]) -> tuple:
    """Identity of frozen weights or data within this process: storage, version, a checksum.

    The version counter moves on every in-place write (optimizer steps, load_state_dict),
    and the strided checksum tells apart different tensors allocated at the same address.
    """
    sig = []
    for t in tensors:
        flat = t.detach().reshape(-1)
        stride = max(1, flat.numel() // 4096)
        sig.append((t.data_ptr(), t._version, tuple(t.shape), float(flat[::stride].double().sum())))
    return tuple(sig)


class PrefixRunner:
    """One run's view of the cache: per-token NLL of rows of a split, prefix served cached.

    Use it inside the same autocast context as the plain path; the precision is part of
    the key, so fp32 and bf16 runs never share hidden states.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        k: int,
        cache: PrefixCache,
        *,
        precision: str,
        model_fingerprint: str = "",
    ):
        self.model = model
        self.core = _gpt2_core(model)
        self.k = k
        self.cache = cache
        self.precision = precision
        prefix_params = [
            p for m in (self.core.wte, self.core.wpe, *self.core.h[:k]) for p in m.parameters()
        ]
        self._model_key = (model_fingerprint, id(model), _signature(prefix_params))

    def _positions(self, length: int, device: torch.device) -> torch.Tensor:
        return torch.arange(length, device=device).unsqueeze(0)

    def _mask(self, h: torch.Tensor, pos: torch.Tensor):
        from transformers.masking_utils import create_causal_mask

        # Exactly as GPT2Model builds it (None for sdpa without padding, a tensor for eager).
        return create_causal_mask(
            config=self.core.config,
            inputs_embeds=h,
            attention_mask=None,
            cache=None,
            position_ids=pos,
        )

    def _blocks(self, h: torch.Tensor, layers, pos: torch.Tensor) -> torch.Tensor:
        mask = self._mask(h, pos)
        for block in layers:
            h = block(
                h, None, mask, None, encoder_attention_mask=None, use_cache=False, position_ids=pos
            )
        return h

    @torch.no_grad()
    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden state entering layer k for token rows x (no cache involved)."""
        pos = self._positions(x.shape[1], x.device)
        h = self.core.wte(x) + self.core.wpe(pos)
        h = self.core.drop(h)
        return self._blocks(h, self.core.h[: self.k], pos)

    def hidden(self, split: str, data: torch.Tensor, rows: torch.Tensor, x: torch.Tensor):
        """Layer-k input for ``rows`` of ``data`` (x = data[rows] on the device)."""
        key = (*self._model_key, split, _signature([data]), self.k, self.precision, str(x.device))
        shape = (data.shape[0], data.shape[1], self.core.config.hidden_size)
        e = self.cache.entry(key, shape, x.device)
        if e is None:  # too large for the bound: compute every time
            self.cache.misses += len(rows)
            return self.prefix(x)
        rows = rows.cpu()
        todo = ~e.filled[rows]
        if bool(todo.any()):
            new = rows[todo].unique()  # a row repeated within a batch is computed once
            h_new = self.prefix(data[new].to(x.device))
            e.hidden[new.to(x.device)] = h_new.float()
            e.filled[new] = True
            self.cache.misses += len(new)
        self.cache.hits += int(len(rows) - int(todo.sum()))
        return e.hidden[rows.to(x.device)]

    def token_nll(
        self,
        split: str,
        data: torch.Tensor,
        rows: torch.Tensor,
        x: torch.Tensor,
        scored: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-token NLL [B, L-1], as ``evaluate.token_nll`` gives it, from layer k on.

        x may be narrower than the data's rows (a batch cut to its scored columns): the
        cached states are cut to match, as causal attention never looks right.
        """
        h = self.hidden(split, data, rows, x)[:, : x.shape[1]]
        pos = self._positions(x.shape[1], x.device)
        h = self.core.ln_f(self._blocks(h, self.core.h[self.k :], pos))
        return scored_nll(self.model.lm_head, h, x, scored)


def runner_for(
    model: torch.nn.Module,
    *,
    precision: str,
    cache: PrefixCache | bool = True,
    model_fingerprint: str = "",
) -> PrefixRunner | None:
    """A PrefixRunner when the model (adapters injected) has a frozen prefix, else None.

    cache: True = the process-wide cache, False = no reuse, or a PrefixCache of your own.
    """
    if cache is False:
        return None
    store = shared_cache() if cache is True else cache
    if store.max_bytes <= 0:
        return None
    k = frozen_prefix_layers(model)
    if k == 0:
        return None
    return PrefixRunner(model, k, store, precision=precision, model_fingerprint=model_fingerprint)
