"""The packed, split token blocks that training and evaluation consume."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Blocks:
    """Train/validation token blocks of one dataset, ready for a causal LM.

    Raw text: every row is ``block_size`` real tokens (no padding); labels are the inputs
    themselves (the model shifts them), so every position after the first is scored.
    Instruction data: one example per row, right-padded, with ``train_labels`` /
    ``val_labels`` in the Hugging Face convention (-100 = not scored; see data/sft.py).
    """

    name: str  # dataset reference as the user gave it
    train: torch.Tensor  # int64 [n_train, block_size]
    val: torch.Tensor  # int64 [n_val, block_size]
    fingerprint: str  # content hash of the source + tokenizer + block size + split seed
    n_docs: int  # documents in the source
    n_tokens: int  # tokens in the source after tokenisation (before dropping a remainder)
    # Synthetic built-ins only: the oracle's NLL (nats) of each scored val token,
    # float64 [n_val, block_size - 1]; its mean is the floor no model can beat.
    val_oracle_nll: torch.Tensor | None = None
    info: dict = field(default_factory=dict)  # generator parameters, Python version, ...
    # Instruction data only: labels int64 like train/val (-100 where not scored), and the
    # examples of each row as task metrics read them ({prompt_ids, reference, choices}).
    train_labels: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None
    val_examples: list[dict] | None = None
    train_examples: list[dict] | None = None
    # Instruction data only: each row's real tokens (the rest is padding), int64 [n].
    train_lengths: torch.Tensor | None = None
    val_lengths: torch.Tensor | None = None

    @property
    def block_size(self) -> int:
        return int(self.train.shape[1])

    def scored(self, split: str) -> torch.Tensor | None:
        """Bool [n, block_size - 1]: which next-token targets count (None: all of them)."""
        labels = self.train_labels if split == "train" else self.val_labels
        return None if labels is None else labels[:, 1:] != -100

    @property
    def floor(self) -> float | None:
        """Bayes-optimal eval loss on exactly these val tokens (synthetic data only)."""
        if self.val_oracle_nll is None:
            return None
        return float(self.val_oracle_nll.mean())
