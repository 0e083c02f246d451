"""Text sources, tokenisation, packing into blocks, deterministic splits, on-disk cache."""

from loraplace.data.blocks import Blocks
from loraplace.data.load import (
    builtin_datasets,
    dataset_fingerprint,
    dataset_kind,
    is_synthetic,
    load_blocks,
    retain_dataset_for,
)

__all__ = [
    "Blocks",
    "builtin_datasets",
    "dataset_fingerprint",
    "dataset_kind",
    "is_synthetic",
    "load_blocks",
    "retain_dataset_for",
]
