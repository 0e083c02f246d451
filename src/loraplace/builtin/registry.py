"""The built-in model registry: a model known by name, its directory (shipped or pretrained
once into the cache under a lock) and its pretraining summary.

Modules that ship a model register it here (``register_builtin_model``); the package
``loraplace.builtin`` imports them all, so every built-in is known before one is looked up.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraplace.builtin.shipped import shipped_dir
from loraplace.data.cache import cache_dir
from loraplace.errors import UserError, closest
from loraplace.heartbeat import Heartbeat
from loraplace.lock import exclusive_lock


@dataclass(frozen=True)
class BuiltinModel:
    """A base model that loraplace pretrains itself.

    config: returns its transformers config without any training (plan/inspect need only that).
    pretrain: trains it and writes model + tokenizer with save_pretrained into the given
        directory; gets an optional ``progress(step, steps, loss)`` callback; returns a
        summary dict (also written as ``loraplace_builtin.json`` by convention).
    """

    name: str
    version: str  # part of the cache directory: bump when data or recipe change the weights
    description: str
    config: Callable[[], Any]
    pretrain: Callable[..., dict]
    datasets: tuple[str, ...] = ()  # the built-in datasets that go with it; the first is default
    info_file: str = "loraplace_builtin.json"
    # Its tokenizer without pretraining the model (cheap), for inspecting data.
    tokenizer: Callable[[], Any] | None = None


BUILTIN_MODELS: dict[str, BuiltinModel] = {}


def register_builtin_model(model: BuiltinModel) -> None:
    """Make a built-in model available by name (idempotent for the same name)."""
    BUILTIN_MODELS[model.name] = model


def is_builtin_model(ref: str) -> bool:
    """Whether ref names a built-in model (rather than a local directory or hub id)."""
    return ref in BUILTIN_MODELS


def _get(name: str) -> BuiltinModel:
    if name not in BUILTIN_MODELS:
        raise UserError(
            f"unknown built-in model {name!r}{closest(name, BUILTIN_MODELS)}: "
            f"choose one of {', '.join(sorted(BUILTIN_MODELS))}"
        )
    return BUILTIN_MODELS[name]


def builtin_model_dir(name: str) -> Path:
    """The directory of a built-in model: shipped in the package, else pretrained and cached.

    A model without shipped weights is trained into a temporary directory that is renamed
    into place only when complete, so a crash never leaves a half-written model in the cache.
    """
    spec = _get(name)
    shipped = shipped_dir(name, spec.version, spec.info_file)
    if shipped is not None:
        return shipped
    root = cache_dir() / "models"
    final = root / f"{name}-{spec.version}"
    if (final / spec.info_file).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / f".{name}-{spec.version}.lock"):
        if (final / spec.info_file).is_file():  # another process finished while we waited
            return final
        tmp = root / f".{name}-{spec.version}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            summary = _pretrain_with_status(spec, tmp)
            if final.exists():  # a leftover without its info file is incomplete: replace it
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _print_summary(spec, summary, final)
    return final


def _pretrain_with_status(spec: BuiltinModel, out: Path) -> dict:
    label = f"pretraining built-in model {spec.name} (first use only; cached afterwards)"
    with Heartbeat(label) as beat:

        def progress(step: int, steps: int, loss: float) -> None:
            beat.update(f"step {step}/{steps}, loss {loss:.3f}")

        return spec.pretrain(out, progress=progress)


def _print_summary(spec: BuiltinModel, summary: dict, path: Path) -> None:
    from rich.console import Console

    line = f"{spec.name}: pretrained in {summary.get('seconds', '?')} s"
    if "gap_closed" in summary:
        line += (
            f"; held-out loss {summary['val_loss']:.3f} closes {100 * summary['gap_closed']:.1f} %"
            f" of the gap from the unigram baseline ({summary['unigram_loss']:.3f})"
            f" to the floor ({summary['floor']:.3f})"
        )
    Console(stderr=True).print(
        f"{line}; saved to {path}", highlight=False, soft_wrap=True, markup=False
    )


def builtin_model_info(name: str) -> dict | None:
    """The pretraining summary of a built-in model, or None if it is not pretrained yet."""
    spec = _get(name)
    shipped = shipped_dir(name, spec.version, spec.info_file)
    root = shipped.parent if shipped is not None else cache_dir() / "models"
    path = root / f"{name}-{spec.version}" / spec.info_file
    return json.loads(path.read_text()) if path.is_file() else None
