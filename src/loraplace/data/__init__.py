"""Datasets: the registry of named datasets, text sources, tokenisation, packing into blocks,
deterministic splits, the on-disk cache.

Attributes load lazily: the built-ins register themselves here on every start-up, and that
must not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from loraplace.data.registry import (
    RegisteredDataset,
    builtin_datasets,
    register_dataset,
    registered_dataset,
)

if TYPE_CHECKING:
    from loraplace.data.blocks import Blocks
    from loraplace.data.tokenized import (
        dataset_fingerprint,
        dataset_kind,
        load_blocks,
        retain_dataset_for,
    )

__all__ = [
    "Blocks",
    "RegisteredDataset",
    "builtin_datasets",
    "dataset_fingerprint",
    "dataset_kind",
    "load_blocks",
    "register_dataset",
    "registered_dataset",
    "retain_dataset_for",
]
_LAZY = {
    "Blocks": "loraplace.data.blocks",
    "dataset_fingerprint": "loraplace.data.tokenized",
    "dataset_kind": "loraplace.data.tokenized",
    "load_blocks": "loraplace.data.tokenized",
    "retain_dataset_for": "loraplace.data.tokenized",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'loraplace.data' has no attribute {name!r}")
