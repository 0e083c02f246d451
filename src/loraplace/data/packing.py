"""Tokenise documents, pack them into fixed-length blocks and split blocks by seed.

Packing: each document's tokens, then EOS, concatenated into one stream that is cut into
``block_size`` rows; the remainder shorter than a block is dropped. No padding, so every
label is a real token. The split is over blocks, not documents: a single ``.txt`` file is
one document, and a corpus of a few long documents (``python-docs`` has 79) would make a
document split coarse and its validation size a matter of luck.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from loraplace.errors import UserError
from loraplace.heartbeat import Heartbeat

_BATCH = 256  # documents per tokenizer call: bounded memory, still batched for speed


def eos_id_of(tokenizer) -> int:
    """The token that separates documents: EOS, else SEP, else BOS."""
    for attr in ("eos_token_id", "sep_token_id", "bos_token_id"):
        token_id = getattr(tokenizer, attr, None)
        if token_id is not None:
            return int(token_id)
    raise UserError(
        f"tokenizer {type(tokenizer).__name__} has no EOS, SEP or BOS token to separate "
        "documents: use a model whose tokenizer defines eos_token"
    )


def tokenizer_hash(tokenizer) -> str:
    """A content hash of a tokenizer: its full serialised form when fast, else its vocab."""
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(str(eos_id_of(tokenizer)).encode())
    return h.hexdigest()


def tokenize_documents(documents: list[str], tokenizer) -> list[np.ndarray]:
    """Token ids of each document, without special tokens (packing adds EOS itself)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    # A fast tokenizer's Rust backend directly, without offsets: ~30 % faster than __call__
    # on the stdlib and the same ids (special tokens are off either way).
    encode_fast = getattr(backend, "encode_batch_fast", None)
    out: list[np.ndarray] = []
    with Heartbeat(f"tokenising {len(documents):,} documents (cached afterwards)") as beat:
        for start in range(0, len(documents), _BATCH):
            batch = documents[start : start + _BATCH]
            if encode_fast is not None:
                ids = [e.ids for e in encode_fast(batch, add_special_tokens=False)]
            else:
                # verbose=False: long documents are expected; they are cut into blocks later.
                ids = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
            out.extend(np.asarray(x, dtype=np.int64) for x in ids)
            beat.update(f"{len(out):,}/{len(documents):,} documents")
    return out


def pack(token_docs: list[np.ndarray], eos_id: int, block_size: int) -> tuple[torch.Tensor, int]:
    """Concatenate documents with EOS after each and cut into rows of block_size.

    Returns (blocks int64 [n_blocks, block_size], n_tokens in the stream incl. EOS).
    """
    eos = np.array([eos_id], dtype=np.int64)
    pieces = [p for doc in token_docs for p in (doc, eos)]
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    n_blocks = len(stream) // block_size
    blocks = torch.from_numpy(stream[: n_blocks * block_size].reshape(n_blocks, block_size))
    return blocks, len(stream)


def split_blocks(
    blocks: torch.Tensor, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of blocks into (train, val), at least one block in each.

    Train rows are in the seeded random order (so that taking the first n is a random
    subset); val rows keep their order in the source.
    """
    n = int(blocks.shape[0])
    if n < 2:
        raise ValueError("need at least two blocks to split")  # callers check first
    n_val = min(max(1, round(val_fraction * n)), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx = perm[:n_val].sort().values
    return blocks[perm[n_val:]].clone(), blocks[val_idx].clone()
