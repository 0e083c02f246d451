"""GGUF models as a model source: ``model: path/to/file.gguf`` and the real built-in names.

A reference that names a GGUF (a ``.gguf`` path, a file starting with the GGUF magic, or
one of ``REAL_MODELS``: ``smollm2-135m-instruct``, ``gemma-3-270m``) resolves to the
directory its first use dequantized into the cache (``convert.py``); from there it loads,
plans and exports like any saved model. Anything else is left to ``models`` as before.
Nothing is downloaded: the real models come from installed wheels (``catalog.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

from loraplace.errors import UserError
from loraplace.gguf_source.catalog import REAL_MODELS, RealModel
from loraplace.gguf_source.convert import INFO_FILE, converted_dir
from loraplace.gguf_source.header import is_gguf_file

__all__ = ["REAL_MODELS", "RealModel", "gguf_dir", "gguf_file", "gguf_record", "is_gguf_ref"]


def is_gguf_ref(ref: str) -> bool:
    """Whether ``ref`` names a GGUF model (without checking that it loads)."""
    if ref in REAL_MODELS or ref.lower().endswith(".gguf"):
        return True
    path = Path(ref).expanduser()
    return path.is_file() and is_gguf_file(path)


def gguf_file(ref: str) -> Path | None:
    """The GGUF file that ``ref`` names, or None when it names no GGUF."""
    if ref in REAL_MODELS:
        return REAL_MODELS[ref].locate()
    if not is_gguf_ref(ref):
        return None
    path = Path(ref).expanduser()
    if not path.is_file():
        raise UserError(f"GGUF file {ref!r} does not exist: check the path")
    return path


def gguf_dir(ref: str) -> Path | None:
    """The converted (cached) directory of a GGUF ``ref``, or None when it names no GGUF."""
    path = gguf_file(ref)
    return None if path is None else converted_dir(path)


def gguf_record(ref: str) -> dict | None:
    """The conversion record of a GGUF ``ref`` (sha256, quantisation, tensors), else None."""
    entry = gguf_dir(ref)
    if entry is None:
        return None
    record = json.loads((entry / INFO_FILE).read_text())
    if ref in REAL_MODELS:
        record["hub_id"] = REAL_MODELS[ref].hub_id
    return record
