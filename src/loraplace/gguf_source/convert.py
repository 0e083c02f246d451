"""Dequantize a GGUF model once into the cache, as a directory ``from_pretrained`` loads.

transformers loads a GGUF by dequantizing every tensor to fp32 (27 s for SmolLM2, 270 s for
Gemma on a busy 2-core machine) and then refuses ``save_pretrained`` on the result. Done on
every load, each run and each ``plan`` would pay that. So the first use converts the file
into ``<cache>/gguf/<sha256 of the GGUF>-v<version>/`` (config.json without the GGUF
``quantization_config``, model.safetensors, tokenizer files with the chat template,
generation config, and ``loraplace_gguf.json``: the GGUF's sha256, its quantisation, the
sha256 of the dequantized tensors). The entry is keyed by the file's content: a GGUF that
changes gets a new entry, never the old conversion. Written in a temporary directory and
renamed, under a lock, so a crash or two concurrent first uses never leave half an entry.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from loraplace.builtin.shipped import weights_fingerprint
from loraplace.data.cache import cache_dir
from loraplace.errors import UserError
from loraplace.gguf_source.digest import file_sha256
from loraplace.gguf_source.header import GGUFHeader, read_header
from loraplace.heartbeat import Heartbeat, Stages
from loraplace.lock import exclusive_lock

CONVERT_VERSION = 1  # bump when the conversion writes different files for the same GGUF
INFO_FILE = "loraplace_gguf.json"
PROGRESS_EVERY_S = 5.0  # seconds between plain progress lines off a terminal


def _entry(sha256: str) -> Path:
    return cache_dir() / "gguf" / f"{sha256[:32]}-v{CONVERT_VERSION}"


def cached_info(entry: Path, sha256: str) -> dict | None:
    """The record of a finished conversion of the GGUF with this sha256, else None."""
    try:
        info = json.loads((entry / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("gguf_sha256") == sha256 else None


def converted_dir(path: Path) -> Path:
    """The cached safetensors directory of the GGUF at ``path``, converting it on first use."""
    sha = file_sha256(path)
    final = _entry(sha)
    if cached_info(final, sha) is not None:
        return final
    header = read_header(path)  # every refusal before minutes of work
    final.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(final.parent / f".{final.name}.lock"):
        if cached_info(final, sha) is not None:  # another process converted it meanwhile
            return final
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            info = _convert_with_progress(path, header, sha, tmp)
            if final.exists():  # an entry without a matching record is incomplete or stale
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _print_done(path, info, final)
    return final


def _convert_with_progress(path: Path, header: GGUFHeader, sha: str, out: Path) -> dict:
    label = f"converting {path.name} ({header.quant}) to safetensors (first use only; cached)"
    start = time.perf_counter()
    with Heartbeat(label, every=PROGRESS_EVERY_S) as beat, Stages(beat) as stages:
        info = _convert(path, header, out, stages.enter)
    info.update(
        gguf_sha256=sha,
        source=str(path.resolve()),
        seconds=round(time.perf_counter() - start, 1),
        convert_version=CONVERT_VERSION,
    )
    (out / INFO_FILE).write_text(json.dumps(info, indent=1, sort_keys=True))
    return info


def _convert(path: Path, header: GGUFHeader, out: Path, stage: Any) -> dict:
    """Dequantize ``path`` into the directory ``out``; returns what the record holds."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # tqdm bars flood a log; Stages shows the progress
    try:
        with _counted_tensors(header, stage):
            model, tokenizer = _load(path, stage)
        # The weights are plain fp32 tensors now; only the GGUF marker blocks save_pretrained
        # ("quantized with gguf and is not serializable"), and a saved marker would make the
        # directory reload as GGUF. Both go.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        stage("writing model.safetensors")
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    stage("hashing the dequantized tensors")
    return {
        "architecture": header.architecture,
        "model_type": model.config.model_type,
        "quant": header.quant,
        "tensor_types": header.tensor_types,
        "weights_sha256": weights_fingerprint(out),
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "gguf_version": importlib.metadata.version("gguf"),
    }


def _load(path: Path, stage: Any) -> tuple[Any, Any]:
    """The GGUF's model (dequantized to fp32) and tokenizer, through transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": path.name}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **kw)
        stage("reading the tokenizer and chat template")
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **kw)
    except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot convert {path}: {first}") from None
    return model, tokenizer


@contextlib.contextmanager
def _counted_tensors(header: GGUFHeader, stage: Any) -> Iterator[None]:
    """Count the tensors transformers dequantizes, as the stage text.

    Its GGUF loader iterates the tensors through a plain ``tqdm`` bar (outside its own
    progress-bar switch), which floods a log; the loop's iterable is counted here instead.
    """
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    def counted(items: Iterable, *args: Any, **kwargs: Any) -> Iterator:
        items = list(items)
        for i, item in enumerate(items):
            stage(f"dequantizing {header.quant} tensors to fp32: {i}/{len(items)}")
            yield item

    saved = getattr(gguf_utils, "tqdm", None)
    stage(f"dequantizing {header.n_tensors} {header.quant} tensors to fp32")
    if saved is not None:
        gguf_utils.tqdm = counted
    try:
        yield
    finally:
        if saved is not None:
            gguf_utils.tqdm = saved


def _print_done(path: Path, info: dict, entry: Path) -> None:
    from rich.console import Console

    Console(stderr=True).print(
        f"{path.name}: {info['quant']} weights dequantized to fp32 in {info['seconds']} s; "
        f"saved to {entry}",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
