"""Trained adapters on disk: written by the driver, kept (all or the best), found, copied out.

A run hands its adapter back as the files PEFT's ``save_pretrained`` writes
(``adapter_model.safetensors``, ``adapter_config.json``), so it crosses a process or
Ray boundary like any other result and the driver stays the only writer. The driver
writes it under ``<study out>/adapters/<run_id>/`` through a temporary directory renamed
into place: a crash leaves a whole adapter or none. ``adapter_config.json`` names a base
model that ``from_pretrained`` loads (a hub id, an absolute path, or a built-in's cache
directory), and ``loraplace_adapter.json`` records that model's fingerprint beside the
run's numbers. Torch-free: loading an adapter back is ``train/save.py``'s.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from loraplace.builtin import builtin_model_dir, is_builtin_model
from loraplace.errors import UserError
from loraplace.metrics import EVAL_LOSS
from loraplace.models import _is_local, local_ref
from loraplace.runs import RunResult, RunSpec

ADAPTERS = "adapters"  # directory under the study's output directory
SIDECAR = "loraplace_adapter.json"
CONFIG = "adapter_config.json"
SAVE_MODES = ("none", "best", "all")


def adapter_dir(out_dir: str | Path, run_id: str) -> Path:
    return Path(out_dir) / ADAPTERS / run_id


def loadable_base(ref: str) -> str:
    """A base-model reference ``from_pretrained`` can load from anywhere on this machine."""
    if is_builtin_model(ref):
        return str(builtin_model_dir(ref).resolve())
    ref = local_ref(ref)  # a GGUF: the cached directory dequantized from it
    if _is_local(ref):
        return str(Path(ref).expanduser().resolve())
    return ref  # a hub id loads as it is


def write_adapter(
    files: dict[str, bytes], dest: Path, spec: RunSpec, metrics: dict[str, float]
) -> Path:
    """Write a run's adapter to ``dest`` atomically (a temporary directory renamed)."""
    base = loadable_base(spec.model)
    config = json.loads(files[CONFIG])
    config["base_model_name_or_path"] = base
    sidecar = {
        "run_id": spec.run_id,
        "placement": spec.placement_name,
        "seed": spec.seed,
        "model": spec.model,
        "base_model_name_or_path": base,
        "model_fingerprint": spec.fingerprints.get("model"),
        "quantize": spec.quantize,
        EVAL_LOSS: metrics.get(EVAL_LOSS),
        "trainable_params": metrics.get("trainable_params"),
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{dest.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
        _replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _replace_dir(src: Path, dest: Path) -> None:
    """Rename src to dest; an existing dest (the same run, saved again) is moved aside first."""
    old = None
    if dest.exists():
        old = dest.parent / f".old-{dest.name}-{uuid.uuid4().hex[:8]}"
        dest.rename(old)
    src.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def keep_best(out_dir: Path, losses: dict[str, float]) -> Path | None:
    """Delete every saved adapter of ``losses``' runs but the lowest-loss one; returns it.

    losses: run id -> eval loss of the study's finished LoRA runs. The best is decided
    before anything is deleted, so a crash in between leaves two whole adapters.
    """
    best = best_saved(out_dir, losses)
    for rid in losses:
        path = adapter_dir(out_dir, rid)
        if best is not None and path != best and (path / CONFIG).is_file():
            shutil.rmtree(path, ignore_errors=True)
    return best


def save_result_adapter(
    out_dir: Path, mode: str, spec: RunSpec, result: RunResult, losses: dict[str, float]
) -> Path | None:
    """Apply the study's ``save`` mode to a finished run; returns the adapter written.

    losses: run id -> eval loss of the study's finished LoRA runs, this one included
    (``best`` keeps only the lowest).
    """
    if mode == "none" or result.adapter is None or result.status != "done":
        return None
    best = best_saved(out_dir, losses) if mode == "best" else None
    if best is not None and result.metrics.get(EVAL_LOSS, float("inf")) > losses[best.name]:
        return None  # a better adapter is already saved: nothing to write
    path = write_adapter(result.adapter, adapter_dir(out_dir, spec.run_id), spec, result.metrics)
    if mode == "best":
        keep_best(out_dir, losses)
    return path


def find_saved(run_id: str, root: str | Path) -> Path:
    """The saved adapter of a run (id or unique prefix) under a study dir or a dir of them."""
    root = Path(root)
    studies = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
    found = sorted(
        {
            d
            for s in studies
            if (s / ADAPTERS).is_dir()
            for d in (s / ADAPTERS).iterdir()
            if d.name.startswith(run_id) and (d / CONFIG).is_file()
        }
    )
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise UserError(f"run id {run_id!r} matches {len(found)} saved adapters: give more of it")
    raise UserError(
        f"no saved adapter for run {run_id!r} under {root}: give the study's output directory "
        "with --from, or re-run the study with save: all (save: best keeps the best run only)"
    )


def copy_saved(src: Path, out_dir: Path) -> list[Path]:
    """Copy a saved adapter's files into out_dir (each written whole, then renamed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for f in sorted(src.iterdir()):
        if f.is_file():
            tmp = out_dir / f".{f.name}.tmp"
            shutil.copyfile(f, tmp)
            tmp.replace(out_dir / f.name)
            written.append(out_dir / f.name)
    return written


def best_saved(out_dir: Path, losses: dict[str, float]) -> Path | None:
    """The lowest-loss run among ``losses`` (run id -> eval loss) with a saved adapter."""
    root = Path(out_dir) / ADAPTERS
    saved = [rid for rid in losses if (root / rid / CONFIG).is_file()]
    return root / min(saved, key=lambda rid: (losses[rid], rid)) if saved else None


def read_sidecar(path: Path) -> dict[str, Any]:
    return json.loads((path / SIDECAR).read_text())
