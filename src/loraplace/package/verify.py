"""``loraplace verify``: how a reader checks a package's numbers.

Four checks, each a list of findings (one line each):
1. files: every file's sha256 against MANIFEST.json, and no file that it does not list;
2. store: every run's status and metrics against the digest taken at packaging, so a
   changed number is named (run, metric, both values), not just "the hash differs";
3. report: rebuilt from the packaged store, compared file by file with the packaged one;
4. retraining: N runs sampled from the store re-trained here (see ``package.retrain``).
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from pathlib import Path
from typing import Any

from loraplace.analysis import read_study_data
from loraplace.errors import UserError
from loraplace.package.archive import MANIFEST, REPORT_DIR, build_packaged_report, extract
from loraplace.package.contents import digest
from loraplace.package.finding import Finding
from loraplace.report.reproducibility import file_manifest, results_hash
from loraplace.store import Store

REBUILT_DIR = "report-rebuilt"
# Report files whose bytes depend on the plotting/report environment, not only the store.
ENV_DEPENDENT = ("figures/", "report.html", "manifest.json")


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def check_files(root: Path, man: dict[str, Any]) -> list[Finding]:
    out, listed = [], set()
    for f in man.get("files", []):
        listed.add(f["path"])
        p = root / f["path"]
        if not p.is_file():
            out.append(Finding(False, "files", f"{f['path']}: missing from the package"))
        elif _sha(p) != f["sha256"]:
            out.append(Finding(False, "files", f"{f['path']}: sha256 differs from {MANIFEST}"))
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != MANIFEST and rel not in listed:
            out.append(Finding(False, "files", f"{rel}: not listed in {MANIFEST}"))
    if not out:
        out.append(Finding(True, "files", f"{len(listed)} files match their sha256"))
    return out


def _value_diffs(run_id: str, rec: dict[str, Any], now: dict[str, Any] | None) -> list[str]:
    label = f"run {run_id} ({rec['placement']}, seed {rec['seed']})"
    if now is None:
        return [f"{label}: missing from the store"]
    diffs = []
    if now["status"] != rec["status"]:
        diffs.append(f"{label}: status {now['status']} in the store, {rec['status']} packaged")
    for name in sorted(set(rec["metrics"]) | set(now["metrics"])):
        a, b = now["metrics"].get(name), rec["metrics"].get(name)
        if a != b:
            diffs.append(f"{label}: {name} = {a!r} in the store, {b!r} when packaged")
    return diffs


def check_store(root: Path, man: dict[str, Any]) -> list[Finding]:
    try:
        data = read_study_data(root / "store", man["study_id"])
    except UserError as exc:
        return [Finding(False, "store", f"the packaged store cannot be read: {exc}")]
    now = digest(data)  # what packaging recorded, taken again from the packaged store
    diffs = [d for rid, rec in man["runs"].items() for d in _value_diffs(rid, rec, now.get(rid))]
    diffs += [
        f"run {rid}: in the store but not in {MANIFEST}" for rid in now if rid not in man["runs"]
    ]
    with Store(root / "store", create=False, writer=False) as store:
        diffs += [  # packaged while its study ran: the run's numbers were never final
            f"run {rid}: marked running in the packaged store (packaged while its study ran): "
            "package the study again once it has ended"
            for rid in store.marked_running(data.study_id)
        ]
    out = [Finding(False, "store", d) for d in diffs]
    if results_hash(data) != man["results_sha256"]:
        out.append(Finding(False, "store", "results hash differs from the one recorded"))
    if not out:
        n_metrics = sum(len(r["metrics"]) for r in now.values())
        out.append(Finding(True, "store", f"{len(now)} runs, {n_metrics} metrics as packaged"))
    return out


def _first_diff(a: Path, b: Path) -> str:
    la = a.read_text(errors="replace").splitlines()
    lb = b.read_text(errors="replace").splitlines()
    for i, (x, y) in enumerate(zip(la, lb, strict=False)):
        if x != y:
            return f"line {i + 1}: packaged {x[:60]!r}, rebuilt {y[:60]!r}"
    return f"{len(la)} lines packaged, {len(lb)} rebuilt"


def check_report(root: Path, man: dict[str, Any]) -> list[Finding]:
    try:
        rebuilt = build_packaged_report(root, man["study_id"], out=REBUILT_DIR)
    except UserError as exc:
        return [Finding(False, "report", f"cannot be rebuilt from the store: {exc}")]
    packaged = root / REPORT_DIR
    old = {f["path"]: f["sha256"] for f in file_manifest(packaged)}
    new = {f["path"]: f["sha256"] for f in file_manifest(rebuilt)}
    same_env = _report_env(packaged) == _report_env(rebuilt)
    out = []
    for path in sorted(set(old) | set(new)):
        if old.get(path) == new.get(path):
            continue
        if path not in old or path not in new:
            where = "packaged report" if path not in new else "rebuilt report"
            out.append(Finding(False, "report", f"{path}: only in the {where}"))
        elif path.startswith(ENV_DEPENDENT) and not same_env:
            out.append(Finding(True, "report", f"{path}: differs (report environment differs)"))
        elif path.endswith((".md", ".tex", ".csv", ".bib", ".html", ".json")):
            detail = _first_diff(packaged / path, rebuilt / path)
            out.append(Finding(False, "report", f"{path} differs from the rebuild: {detail}"))
        else:
            out.append(Finding(False, "report", f"{path} differs from the rebuild"))
    failed = [f for f in out if not f.ok]
    if not failed:
        out.append(Finding(True, "report", f"rebuilt from the store: {len(new)} files identical"))
    elif len(failed) > 3:  # one changed number moves many files: name the first, count the rest
        first = next((f for f in failed if f.text.startswith("report.md")), failed[0])
        rest = Finding(False, "report", f"and {len(failed) - 1} more report files differ")
        out = [f for f in out if f.ok] + [first, rest]
    return out


def _report_env(report_dir: Path) -> Any:
    try:
        man = json.loads((report_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return man.get("reproducibility", {}).get("report_environment")


def sample_runs(man: dict[str, Any], specs: dict[str, dict], n: int, seed: int) -> list[str]:
    """N done trained runs, sampled reproducibly (same seed, same runs)."""
    done = sorted(
        rid
        for rid, rec in man["runs"].items()
        if rec["status"] == "done" and specs.get(rid, {}).get("kind") in ("lora", "full")
    )
    return sorted(random.Random(seed).sample(done, min(n, len(done))))


def verify_package(
    archive: str | Path, runs: int = 2, seed: int = 0, on_finding=None
) -> list[Finding]:
    """Every check's findings, in order; ``on_finding`` sees each as it is made."""
    findings: list[Finding] = []

    def add(fs: list[Finding]) -> None:
        for f in fs:
            findings.append(f)
            if on_finding is not None:
                on_finding(f)

    with tempfile.TemporaryDirectory(prefix="loraplace-verify-") as tmp:
        root = extract(Path(archive), Path(tmp))
        try:
            man = json.loads((root / MANIFEST).read_text())
            man["runs"], man["study_id"], man["results_sha256"]  # noqa: B018
        except (ValueError, KeyError) as exc:
            raise UserError(f"{archive}: {MANIFEST} is not a package manifest ({exc})") from None
        add(check_files(root, man))
        add(check_store(root, man))
        add(check_report(root, man))
        if runs > 0:
            from loraplace.package.retrain import retrain_runs  # torch loads only here

            specs = {p.stem: json.loads(p.read_text()) for p in (root / "specs").glob("*.json")}
            chosen = sample_runs(man, specs, runs, seed)
            for f in retrain_runs(root, man, specs, chosen):
                add([f])
    return findings
