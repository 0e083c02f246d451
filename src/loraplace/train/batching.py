"""Which rows each step trains on, how wide they run, and how many tokens that is.

Raw text: every row is ``block_size`` real tokens, so batches are drawn from shuffled
epochs as they always were (a ragged tail is dropped and the epoch reshuffled).

Instruction data: one example per row, right-padded to the longest example of the data
set. Two things keep padding out of the compute:
- a batch runs only as wide as its last scored target needs (``trimmed``): the columns
  after it are padding or unscored, and causal attention never looks right, so the
  scored NLL is exactly that of the full-width rows;
- batches are length-grouped (as transformers' ``group_by_length``): each epoch is a
  seeded shuffle of every example, cut into windows of ``WINDOW_BATCHES`` batches; each
  window is sorted by width and cut into batches, and the batches are shuffled. Every
  example is seen once per epoch (the epoch's last batch may be short), and the order
  depends on the seed alone.

The counts a run stores come from the same batches: ``processed`` tokens are the
non-padding tokens fed to the model, ``scored`` the next-token targets its loss reads.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from loraplace.data import Blocks

WINDOW_BATCHES = 50  # batches per length-sorted window (transformers' megabatch_mult)
RAW_BATCHING = "shuffled epochs of full blocks (no padding)"
GROUPED_BATCHING = (
    f"length-grouped: each epoch shuffled, sorted by length within windows of "
    f"{WINDOW_BATCHES} batches, batches shuffled; each batch cut to its longest scored row"
)


def width(scored: torch.Tensor) -> int:
    """Columns a batch needs: through its last scored target (bool [B, L-1] mask)."""
    cols = scored.any(dim=0).nonzero()
    return max(2, int(cols[-1]) + 2) if len(cols) else 2


def trimmed(
    rows: torch.Tensor, scored: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(rows, scored) cut to the columns the scored targets need (raw text: unchanged)."""
    if scored is None:
        return rows, None
    w = width(scored)
    return rows[:, :w], scored[:, : w - 1]


def row_widths(scored: torch.Tensor) -> torch.Tensor:
    """Each row's own width: through its last scored target, int64 [n]."""
    n_cols = scored.shape[1]
    last = torch.where(scored, torch.arange(n_cols), -1).amax(dim=1)
    return (last + 2).clamp(min=2)


def batch_order(
    n: int, batch_size: int, steps: int, seed: int, widths: torch.Tensor | None = None
) -> Iterator[torch.Tensor]:
    """Row indices of each step's batch.

    widths: each row's width (instruction data): length-grouped epochs; None (raw text):
        shuffled epochs, the ragged tail dropped so every batch has batch_size rows.
    """
    g = torch.Generator().manual_seed(seed)
    if widths is None:
        order = torch.randperm(n, generator=g)
        pos = 0
        for _ in range(steps):
            if pos + batch_size > n:
                order = torch.randperm(n, generator=g)
                pos = 0
            yield order[pos : pos + batch_size]
            pos += batch_size
        return
    done = 0
    while done < steps:
        for idx in grouped_epoch(widths, batch_size, g):
            if done == steps:
                return
            yield idx
            done += 1


def grouped_epoch(widths: torch.Tensor, batch_size: int, g: torch.Generator) -> list[torch.Tensor]:
    """One length-grouped epoch: every row once, in batches of similar width."""
    perm = torch.randperm(len(widths), generator=g)
    window = batch_size * WINDOW_BATCHES
    out: list[torch.Tensor] = []
    for start in range(0, len(perm), window):
        rows = perm[start : start + window]
        # Stable: rows of equal width keep their shuffled order, so ties stay random.
        rows = rows[torch.sort(widths[rows], descending=True, stable=True).indices]
        out += list(rows.split(batch_size))
    return [out[i] for i in torch.randperm(len(out), generator=g).tolist()]


def batch_tokens(
    rows: torch.Tensor,
    scored: torch.Tensor | None,
    lengths: torch.Tensor | None,
    grad_accum: int,
) -> tuple[int, int]:
    """(processed, scored) tokens of one batch run as ``grad_accum`` trimmed micro-batches.

    rows: the batch's rows [B, L]; scored: their mask (None: raw text, all but the first
    token scored); lengths: each row's real tokens (None: the rows have no padding).
    """
    if scored is None:
        return rows.numel(), rows.shape[0] * (rows.shape[1] - 1)
    processed = 0
    for micro in torch.arange(rows.shape[0]).chunk(grad_accum):
        w = width(scored[micro])
        real = lengths[micro] if lengths is not None else torch.full((len(micro),), w)
        processed += int(real.clamp(max=w).sum())
    return processed, int(scored.sum())


class Tally:
    """The processed and scored tokens of a run's train batches so far."""

    def __init__(self, blocks: Blocks, grad_accum: int):
        self.rows, self.grad_accum = blocks.train, grad_accum
        self.mask, self.lengths = blocks.scored("train"), blocks.train_lengths
        # Each row's width (instruction data), which groups batches; None for raw text.
        self.widths = None if self.mask is None else row_widths(self.mask)
        self.processed = self.scored = 0

    def add(self, idx: torch.Tensor) -> None:
        mask = None if self.mask is None else self.mask[idx]
        lengths = None if self.lengths is None else self.lengths[idx]
        processed, scored = batch_tokens(self.rows[idx], mask, lengths, self.grad_accum)
        self.processed += processed
        self.scored += scored
