"""On-disk cache of packed, split blocks, keyed by what determines them.

Layout: ``<cache root>/data/<key>/{blocks.safetensors, meta.json}``. An entry is written
to a temporary directory and renamed into place, so a reader sees a whole entry or none,
and two processes that build the same entry at once both succeed.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads with the first cache read or write, not with this module
    import torch

    from loraplace.data.blocks import Blocks

CACHE_VERSION = 2  # bump when packing or splitting changes what a key produces
CACHE_ENV = "LORAPLACE_CACHE"


def cache_dir() -> pathlib.Path:
    """The loraplace cache (data blocks, built-in models): $LORAPLACE_CACHE, else
    ~/.cache/loraplace."""
    env = os.environ.get(CACHE_ENV)
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "loraplace"


def cache_key(
    content_hash: str,
    tokenizer_hash: str,
    block_size: int,
    split_seed: int,
    val_fraction: float,
    extra: dict | None = None,
) -> str:
    """sha256 over everything that determines the packed, split blocks.

    extra: what else determines them (instruction data: format, loss mask, template).
    """
    ident = {
        "version": CACHE_VERSION,
        "content": content_hash,
        "tokenizer": tokenizer_hash,
        "block_size": block_size,
        "split_seed": split_seed,
        "val_fraction": val_fraction,
    }
    if extra:  # absent for raw text, so its keys are unchanged
        ident["extra"] = extra
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _entry(key: str) -> pathlib.Path:
    return cache_dir() / "data" / key


def load_cached(key: str, name: str) -> Blocks | None:
    """The cached Blocks for key (renamed to ``name``), or None on a miss."""
    from safetensors.torch import load_file

    from loraplace.data.blocks import Blocks

    entry = _entry(key)
    try:
        tensors = load_file(entry / "blocks.safetensors")
        meta = json.loads((entry / "meta.json").read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    if "train_labels" in tensors and "train_lengths" not in tensors:
        return None  # instruction data cached before row lengths were kept: rebuild it
    return Blocks(
        name=name,
        train=tensors["train"].long(),
        val=tensors["val"].long(),
        fingerprint=key,
        n_docs=meta["n_docs"],
        n_tokens=meta["n_tokens"],
        info=meta["info"],
        train_labels=_long(tensors.get("train_labels")),
        val_labels=_long(tensors.get("val_labels")),
        val_examples=meta.get("val_examples"),
        train_examples=meta.get("train_examples"),
        train_lengths=_long(tensors.get("train_lengths")),
        val_lengths=_long(tensors.get("val_lengths")),
    )


def _long(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.long()


def store(blocks: Blocks) -> pathlib.Path:
    """Write blocks under their fingerprint (the cache key); return the entry directory."""
    import torch
    from safetensors.torch import save_file

    entry = _entry(blocks.fingerprint)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{blocks.fingerprint[:16]}-", dir=entry.parent))
    try:
        # int32 on disk halves the file (token ids fit any vocabulary); int64 in memory.
        tensors = {"train": blocks.train, "val": blocks.val}
        if blocks.train_labels is not None and blocks.val_labels is not None:
            tensors.update(train_labels=blocks.train_labels, val_labels=blocks.val_labels)
        if blocks.train_lengths is not None and blocks.val_lengths is not None:
            tensors.update(train_lengths=blocks.train_lengths, val_lengths=blocks.val_lengths)
        save_file({k: v.to(torch.int32) for k, v in tensors.items()}, tmp / "blocks.safetensors")
        meta = {"n_docs": blocks.n_docs, "n_tokens": blocks.n_tokens, "info": blocks.info}
        for split in ("train_examples", "val_examples"):
            if getattr(blocks, split) is not None:
                meta[split] = getattr(blocks, split)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        try:
            os.rename(tmp, entry)
        except OSError:
            if not (entry / "meta.json").exists():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry
