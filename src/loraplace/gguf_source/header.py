"""What a GGUF file is, read from its header before any weight is dequantized.

Every refusal a user can cause is found here, in a second, rather than minutes into a
dequantization: a file that is not GGUF, a truncated one, an architecture transformers
cannot load, a tensor type nothing can dequantize, and the missing ``gguf`` package.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraplace.errors import UserError

MAGIC = b"GGUF"
REAL_EXTRA = "pip install 'loraplace[real]'"


@dataclass(frozen=True)
class GGUFHeader:
    """The facts of a GGUF file that decide whether and how it loads."""

    architecture: str  # general.architecture, e.g. llama, gemma3
    quant: str  # the file's quantisation as llama.cpp names it: Q4_1, Q4_K_M, Q8_0, F32
    tensor_types: dict[str, int]  # GGML type name -> number of tensors stored in it
    n_tensors: int


def require_gguf() -> Any:
    """The ``gguf`` package, or one line naming the extra that installs it."""
    try:
        import gguf
    except ImportError:
        raise UserError(f"GGUF models need the gguf package: {REAL_EXTRA}") from None
    return gguf


def is_gguf_file(path: Path) -> bool:
    """Whether the file at ``path`` starts with the GGUF magic bytes."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == MAGIC
    except OSError:
        return False


def read_header(path: Path) -> GGUFHeader:
    """The header of the GGUF at ``path``; UserError for anything that would not load."""
    if not is_gguf_file(path):
        raise UserError(
            f"{path} is not a GGUF file (it does not start with 'GGUF'): give a .gguf "
            "model file, a model directory or a built-in model name"
        )
    gguf = require_gguf()
    try:
        reader = gguf.GGUFReader(str(path))
        tensors = list(reader.tensors)
    except Exception as exc:  # struct/numpy errors of a short or garbled file
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{path} is truncated or damaged ({why}): copy or install the file again"
        ) from None
    size = path.stat().st_size
    end = max((t.data_offset + int(t.n_bytes) for t in tensors), default=0)
    if end > size or any(t.data.nbytes != int(t.n_bytes) for t in tensors):
        raise UserError(
            f"{path} is truncated: its tensors need {end:,} bytes but the file has {size:,}: "
            "copy or install the file again"
        )
    arch = _field(reader, "general.architecture") or "unknown"
    _check_architecture(path, str(arch))
    types = Counter(t.tensor_type.name for t in tensors)
    _check_types(gguf, path, {t.tensor_type for t in tensors})
    return GGUFHeader(
        architecture=str(arch),
        quant=_quant_name(gguf, _field(reader, "general.file_type"), tensors),
        tensor_types=dict(sorted(types.items())),
        n_tensors=len(tensors),
    )


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def _check_architecture(path: Path, arch: str) -> None:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    # The mapping's keys also hold its non-model sections ("general", "tokenizer").
    known = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})
    if arch not in known:
        raise UserError(
            f"{path} holds a {arch!r} model, which transformers cannot load from GGUF: "
            f"use one of {', '.join(known)}, or convert it to a safetensors directory"
        )


def _check_types(gguf: Any, path: Path, types: set) -> None:
    """Dequantize one zero block of each type: NotImplementedError marks an unsupported one."""
    import numpy as np

    for qtype in sorted(types):
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        try:
            gguf.quants.dequantize(np.zeros(type_size, np.uint8), qtype)
        except NotImplementedError:
            raise UserError(
                f"{path} stores tensors as {qtype.name}, which the gguf package cannot "
                "dequantize: use a file quantised as F16, Q8_0, Q4_1, Q4_K_M or another "
                "type gguf supports"
            ) from None


def _quant_name(gguf: Any, file_type: Any, tensors: list) -> str:
    """llama.cpp's name of the file type (MOSTLY_Q4_K_M -> Q4_K_M), else the commonest type."""
    if file_type is not None:
        try:
            name = gguf.LlamaFileType(int(file_type)).name
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    matrices = Counter(t.tensor_type.name for t in tensors if len(t.shape) > 1)
    return matrices.most_common(1)[0][0] if matrices else "F32"
