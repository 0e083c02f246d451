"""Text sources, tokenisation, packing into blocks, deterministic splits, on-disk cache."""

from loraplace.data.blocks import Blocks

__all__ = ["Blocks"]
