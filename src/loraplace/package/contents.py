"""What goes into a study package besides the report: a clean store copy, the specs, the
study file, the environment lock, fingerprints and the digest of every stored number.

The package must hold no absolute path, home directory or user name: the store records
command lines (``/home/u/.venv/bin/loraplace run ...``) and, for failed runs, tracebacks.
The copy rewrites every absolute path in its text columns to the path's last component
and is vacuumed, so the old text does not survive in freed pages.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from loraplace.analysis import StudyData
from loraplace.builtin import builtin_model_info, is_builtin_model
from loraplace.report.reproducibility import distinct
from loraplace.store import rewritten_copy

# An absolute POSIX path of two or more components, not inside a URL or a relative path.
_ABS_PATH = re.compile(r"(?<![\w.~:/-])/(?:[^\s/'\"<>|:]+/)+([^\s/'\"<>|:,;)]*)")


def scrub(text: str) -> str:
    """Every absolute path becomes its last component: '/a/b/.venv/bin/loraplace' -> 'loraplace'."""
    return _ABS_PATH.sub(lambda m: m.group(1) or ".", text)


def copy_store(src: Path, dst: Path) -> int:
    """A single-file, scrubbed and vacuumed copy of the store; returns the values rewritten."""
    return rewritten_copy(src, dst, scrub)


def digest(study: StudyData) -> dict[str, Any]:
    """Every run's status and metrics, to point at the number that changed."""
    return {
        r.run_id: {
            "placement": r.placement,
            "seed": r.seed,
            "status": r.status,
            "metrics": r.metrics,
        }
        for r in study.runs
    }


def environment_lock() -> str:
    """Every installed distribution as name==version, sorted (a pip constraints file)."""
    seen: dict[str, str] = {}
    for dist in metadata.distributions():
        meta = dist.metadata  # typeshed's PackageMetadata has no .get before Python 3.12
        name = meta["Name"] if "Name" in meta else None
        if name:
            seen.setdefault(name.lower(), f"{name}=={dist.version}")
    header = f"# python {platform.python_version()} on {platform.machine()}\n"
    return header + "\n".join(seen[k] for k in sorted(seen)) + "\n"


def fingerprints(study: StudyData) -> dict[str, Any]:
    """The model and data references of the study, with the fingerprints its runs used."""
    out: dict[str, dict[str, list[str]]] = {}
    for r in study.runs:
        fps = r.spec.get("fingerprints") or {}
        refs = {
            "model": r.spec.get("model"),
            "data": r.spec.get("dataset"),
            "retain": r.spec.get("retain_dataset"),
            "gguf": r.spec.get("model"),  # a GGUF base: its quantisation and file sha256
        }
        for kind, ref in refs.items():
            if ref is None or kind not in fps:
                continue
            seen = out.setdefault(kind, {}).setdefault(str(ref), [])
            if fps[kind] not in seen:
                seen.append(fps[kind])
    weights = builtin_weights(list(out.get("model", {})))
    return {**out, "builtin_weights": weights} if weights else out


def builtin_weights(models: list[str]) -> dict[str, str]:
    """sha256 over the tensors of each built-in model's weights, as recorded when made.

    A built-in's model fingerprint hashes its name, version and config only, so the weights
    (pretrained on first use) are pinned here as well.
    """

    out = {}
    for m in models:
        info = builtin_model_info(m) if is_builtin_model(m) else None
        if info and info.get("weights_sha256"):
            out[m] = str(info["weights_sha256"])
    return out


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def reproduce_md(name: str, archive: str, config_cmd: str) -> str:
    """REPRODUCE.md: how a reader checks the numbers and reruns the study."""
    return f"""# Reproducing study `{name}`

This package was written by `loraplace package`. It holds the study file (`study.yaml`),
every run's resolved spec (`specs/`), the results store (`store/loraplace.db`), the report
built from it (`report/`), the environment it ran in (`environment.lock`,
`environment.json`), the model and data fingerprints (`fingerprints.json`) and the
sha256 of every file (`MANIFEST.json`).

## Check the numbers

```sh
pip install -r environment.lock        # the exact versions (or: pip install loraplace)
loraplace verify {archive} --runs 2
```

`verify` checks every file against `MANIFEST.json` and every stored number against the
digest recorded at packaging, rebuilds the report from the store and compares it with
`report/`, then re-trains two runs sampled from the store and compares their eval loss
with the stored one (identical on the same kind of machine, CPU, precision and versions).

## Rebuild the report, rerun the study

From the unpacked directory:

```sh
loraplace report store --study {name} --out report
{config_cmd}
```
"""


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("loraplace", "torch", "transformers", "peft", "numpy", "matplotlib", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


INPUTS_DIR = "inputs"
INPUTS_LIMIT = 64 * 2**20  # bytes of local model and data files copied into a package


def _size(p: Path) -> int:
    return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*"))


def copy_local_inputs(study: StudyData, dest: Path) -> list[str]:
    """Copy the study's local model/data files (not hub ids or built-ins) when small.

    The packaged specs name them by their last path component, which is what ``verify``
    looks for under ``inputs/``. Returns the references it could not include.
    """

    refs = distinct(
        r.spec.get(k) for r in study.runs for k in ("model", "dataset", "retain_dataset")
    )
    left, used = [], 0
    for ref in refs:
        p = Path(str(ref))
        if not p.is_absolute() or not p.exists():
            continue
        size = _size(p)
        if used + size > INPUTS_LIMIT:
            left.append(p.name)
            continue
        used += size
        target = dest / INPUTS_DIR / p.name
        target.parent.mkdir(exist_ok=True)
        if p.is_dir():
            shutil.copytree(p, target, dirs_exist_ok=True)
        else:
            shutil.copy2(p, target)
    return left
