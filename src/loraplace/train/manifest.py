"""The manifest recorded with every run: enough to know what produced its numbers."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

_PACKAGES = ("loraplace", "torch", "transformers", "peft", "datasets", "tokenizers", "numpy")


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the loraplace source tree, when it is a git checkout."""
    root = Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "processor": platform.processor() or None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def build_manifest(
    *,
    device: torch.device,
    precision: str,
    fingerprints: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Package versions, threads, device, precision, data/model hashes, commit, command."""
    manifest: dict[str, Any] = {
        "packages": package_versions(),
        **device_info(device),
        "precision": precision,
        "fingerprints": dict(fingerprints),
        "git_commit": git_commit(),
        "command": " ".join(sys.argv),
    }
    if extra:
        manifest.update(extra)
    return manifest
