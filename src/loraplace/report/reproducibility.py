"""Reproducibility: what produced the numbers (config, hashes, versions, commands) and what
the report wrote (every file with its hash)."""

from __future__ import annotations

import hashlib
import json
import platform
import shlex
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from loraplace.analysis import StudyData


def results_hash(study: StudyData) -> str:
    """sha256 of the study's config, runs, statuses and metrics in canonical JSON.

    Hashing the content rather than the .db file makes it independent of SQLite's page
    layout and WAL state: two stores with the same results have the same hash.
    """
    payload = {
        "config": study.config,
        "runs": [
            {
                "run_id": r.run_id,
                "placement": r.placement,
                "kind": r.kind,
                "seed": r.seed,
                "status": r.status,
                "diverged_step": r.diverged_step,
                "metrics": r.metrics,
            }
            for r in sorted(study.runs, key=lambda r: r.run_id)
        ],
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def distinct(values: Iterable[Any]) -> list[Any]:
    """Values in first-seen order, without repeats or Nones."""
    out: list[Any] = []
    for v in values:
        if v is not None and v not in out:
            out.append(v)
    return out


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def reproducibility(study: StudyData, store_arg: str) -> dict[str, Any]:
    """Everything needed to rerun the study and rebuild this report."""
    mans = [r.manifest for r in study.runs if r.manifest]
    versions: dict[str, list[Any]] = {}
    for m in mans:
        # the runner writes "packages"; "versions" is accepted from older or foreign stores
        for k, v in (m.get("packages") or m.get("versions") or {}).items():
            versions.setdefault(k, [])
            if v not in versions[k]:
                versions[k].append(v)
    fingerprints: dict[str, list[Any]] = {}
    for r in study.runs:
        for src in (r.spec.get("fingerprints") or {}, r.manifest.get("fingerprints") or {}):
            for k, v in src.items():
                fingerprints.setdefault(k, [])
                if v not in fingerprints[k]:
                    fingerprints[k].append(v)
    return {
        "study": study.name,
        "study_id": study.study_id,
        "store": str(study.store_path),
        "results_sha256": results_hash(study),
        "runs": len(study.runs),
        "command": study.command,
        "rerun": {
            "study": study.command,
            "report": (
                f"loraplace report {shlex.quote(store_arg)} --study {shlex.quote(study.name)}"
            ),
        },
        "run_environment": {
            "versions": versions,
            "device": distinct([m.get("device") for m in mans]),
            "precision": distinct([m.get("precision") for m in mans]),
            "torch_threads": distinct([m.get("torch_threads") for m in mans]),
            "git_commit": distinct([m.get("git_commit") for m in mans]),
            "platform": distinct([m.get("platform") for m in mans]),
            "gpu": distinct([m.get("gpu") for m in mans]),
            "fingerprints": fingerprints,
        },
        "report_environment": {
            "python": platform.python_version(),
            **{p: _version(p) for p in ("loraplace", "numpy", "scipy", "pandas", "matplotlib")},
        },
        "config": study.config,
    }


def file_manifest(root: Path) -> list[dict[str, Any]]:
    """Every file under ``root`` with its size and sha256, in path order."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out.append(
                {
                    "path": p.relative_to(root).as_posix(),
                    "bytes": p.stat().st_size,
                    "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                }
            )
    return out
