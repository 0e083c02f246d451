"""Re-training sampled runs of a package and comparing their eval loss with the stored one.

The run's spec is the packaged one; its model and data are found by content, not by path:
the packaged spec names a local file by its last component, looked up under the
package's ``inputs/`` and then the working directory, and the model and data
fingerprints must equal the ones the run recorded before a number is compared.

The tolerance depends on how alike the two environments are. On the same kind of CPU,
with the same precision, thread count and versions, a run repeats bit for bit, so the
tolerance is zero; GPU kernels need not be deterministic; another environment changes
floating-point rounding, which a short run amplifies only a little.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, overload

from loraplace import builtin
from loraplace.analysis import read_study_data
from loraplace.builtin.shipped import weights_fingerprint
from loraplace.metrics import EVAL_LOSS
from loraplace.package.contents import INPUTS_DIR
from loraplace.package.finding import Finding
from loraplace.runs import RunSpec

SAME_CPU = 0.0  # relative tolerance: identical numbers
SAME_GPU = 1e-4
OTHER_ENV = 2e-2
_PACKAGES = ("torch", "transformers", "peft")


def environment(manifest: dict[str, Any]) -> dict[str, Any]:
    """What decides floating-point results, from a run manifest."""
    pk = manifest.get("packages") or {}
    return {
        "device": str(manifest.get("device", "")).split(":")[0],
        "precision": manifest.get("precision"),
        "machine": manifest.get("machine"),
        "processor": manifest.get("processor"),
        "gpu": manifest.get("gpu"),
        "threads": manifest.get("torch_threads"),
        **{p: pk.get(p) for p in _PACKAGES},
    }


def tolerance(stored: dict[str, Any], now: dict[str, Any]) -> tuple[float, str]:
    """(relative tolerance, why) for a stored and a reproduced run manifest."""
    a, b = environment(stored), environment(now)
    differ = [f"{k} {a[k]} vs {b[k]}" for k in a if a[k] != b[k]]
    if differ:
        return OTHER_ENV, "environment differs: " + "; ".join(differ)
    desc = f"same {a['device']}, {a['precision']}, {a['threads']} threads, torch {a['torch']}"
    return (SAME_CPU, desc) if a["device"] == "cpu" else (SAME_GPU, desc)


@overload
def localize(ref: str, root: Path) -> str: ...
@overload
def localize(ref: None, root: Path) -> None: ...
def localize(ref: str | None, root: Path) -> str | None:
    """A packaged model/data reference as this machine can open it."""
    if ref is None:
        return None
    for base in (root / INPUTS_DIR, Path.cwd()):
        if (base / ref).exists():
            return str((base / ref).resolve())
    return ref  # a built-in name or a hub id


def _weights_problem(model: str, weights: dict[str, str]) -> list[str]:
    """The built-in model's weights here against the ones the package pinned."""
    if model not in weights:
        return []
    here = weights_fingerprint(builtin.builtin_model_dir(model))
    if here == weights[model]:
        return []
    return [f"built-in {model} weights {here[:16]} here, {weights[model][:16]} packaged"]


def _fingerprint_problems(spec, assets, weights: dict[str, str]) -> list[str]:
    want = spec.fingerprints
    problems = _weights_problem(spec.model, weights)
    if problems:
        return problems
    have = {"model": assets.model_fingerprint(spec.model)}
    if "data" in want:
        have["data"] = assets.spec_blocks(spec).fingerprint
    if "retain" in want and spec.retain_dataset:
        have["retain"] = assets.retain_blocks(spec).fingerprint
    return [
        f"{k} fingerprint {have[k]} here, {want[k]} in the run"
        for k in have
        if k in want and have[k] != want[k]
    ]


def retrain_one(
    rec, spec_dict: dict[str, Any], root: Path, executor, weights: dict[str, str]
) -> Finding:
    """Re-train one stored run and compare its eval loss with the stored one."""
    import torch

    label = f"run {rec.run_id} ({rec.placement}, seed {rec.seed})"
    try:
        spec = RunSpec.from_dict(spec_dict)
    except TypeError as exc:
        return Finding(False, "retrain", f"{label}: spec not readable by this loraplace ({exc})")
    spec = dataclasses.replace(
        spec,
        model=localize(spec.model, root),
        dataset=localize(spec.dataset, root),
        retain_dataset=localize(spec.retain_dataset, root),
    )
    problems = _fingerprint_problems(spec, executor.assets, weights)
    if problems:
        return Finding(False, "retrain", f"{label}: not re-trained: " + "; ".join(problems))
    threads = rec.manifest.get("torch_threads")
    if isinstance(threads, int) and 0 < threads <= (os.cpu_count() or 1):
        torch.set_num_threads(threads)  # the reduction order the run had
    res = executor.run_one(spec)
    if res.status != "done":
        return Finding(False, "retrain", f"{label}: re-training ended {res.status}: {res.error}")
    stored, got = rec.metrics[EVAL_LOSS], res.metrics[EVAL_LOSS]
    tol, why = tolerance(rec.manifest, res.manifest)
    diff = abs(got - stored)
    ok = diff <= tol * max(1.0, abs(stored))
    verdict = "identical" if diff == 0 else f"|difference| {diff:.3g}"
    return Finding(
        ok,
        "retrain",
        f"{label}: eval_loss stored {stored!r}, reproduced {got!r}: {verdict} "
        f"(tolerance {tol:g}; {why})",
    )


def retrain_runs(
    root: Path, man: dict[str, Any], specs: dict[str, dict], chosen: list[str]
) -> Iterator[Finding]:
    """Re-train each chosen run in this process, one after another."""
    from loraplace.executors.local import LocalExecutor

    data = read_study_data(root / "store", man["study_id"])
    by_id = {r.run_id: r for r in data.runs}
    executor = LocalExecutor()
    fps = json.loads((root / "fingerprints.json").read_text())
    for rid in chosen:
        yield retrain_one(by_id[rid], specs[rid], root, executor, fps.get("builtin_weights", {}))
