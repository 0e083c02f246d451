"""``loraplace package``: one study, its store, specs, report and environment, in one tar.gz.

The package is staged in a temporary directory and written atomically. Its report is
rebuilt from the packaged (scrubbed) store with relative paths, exactly the way
``loraplace verify`` rebuilds it, so a reader's rebuild can be compared byte for byte.
The tar is deterministic: sorted entries, zero mtimes, no owner names.
"""

from __future__ import annotations

import contextlib
import getpass
import gzip
import io
import os
import re
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from loraplace.analysis import read_study_data
from loraplace.errors import UserError
from loraplace.lock import live_holder
from loraplace.outdir import check_writable
from loraplace.package import contents as pc
from loraplace.report.reproducibility import file_manifest, results_hash
from loraplace.store import STORE_NAME, Store

FORMAT = 1
MANIFEST = "MANIFEST.json"
STORE_ARG = "store"  # the packaged store, relative to the package root
REPORT_DIR = "report"


@dataclass(frozen=True)
class PackageResult:
    path: Path
    study: str
    files: int
    bytes: int
    scrubbed: int  # store values whose absolute paths were rewritten


@contextlib.contextmanager
def inside(path: Path) -> Iterator[None]:
    """Run with ``path`` as the working directory: the report records its paths relative."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def build_packaged_report(root: Path, study: str, out: str = REPORT_DIR) -> Path:
    """The report of the packaged store, built the one way packaging and verify share."""
    from loraplace.report import build_report  # matplotlib loads only here

    with inside(root):
        build_report(STORE_ARG, out, study=study)
    return root / out


def _stage(store: str | Path, study: str | None, stage: Path, archive: str) -> tuple[str, int]:
    data = read_study_data(store, study)
    (stage / "store").mkdir(parents=True)
    scrubbed = pc.copy_store(Path(data.store_path), stage / "store" / STORE_NAME)
    left_out = pc.copy_local_inputs(data, stage)
    packed = read_study_data(stage / "store", data.study_id)
    (stage / "specs").mkdir()
    for r in packed.runs:
        pc.write_json(stage / "specs" / f"{r.run_id}.json", r.spec)
    (stage / "study.yaml").write_text(
        f"# the validated study {packed.name!r}, as stored; rerun: loraplace run study.yaml\n"
        + yaml.safe_dump(packed.config, sort_keys=False, allow_unicode=True)
    )
    build_packaged_report(stage, packed.study_id)
    (stage / "environment.lock").write_text(pc.environment_lock())
    pc.write_json(stage / "environment.json", {"packaged_with": pc.package_versions()})
    pc.write_json(stage / "fingerprints.json", pc.fingerprints(packed))
    (stage / "REPRODUCE.md").write_text(
        pc.reproduce_md(packed.name, archive, "loraplace run study.yaml")
    )
    pc.write_json(
        stage / MANIFEST,
        {
            "format": FORMAT,
            "study": packed.name,
            "study_id": packed.study_id,
            "results_sha256": results_hash(packed),
            "files": file_manifest(stage),
            "runs": pc.digest(packed),
            "packaged_with": pc.package_versions(),
            "inputs_left_out": left_out,  # local model/data too large to include
        },
    )
    return packed.name, scrubbed


def private_strings() -> list[tuple[str, re.Pattern[str]]]:
    """What must not appear in a package: home, working directory, interpreter, user name."""
    pats = []
    for label, path in (("home directory", Path.home()), ("working directory", Path.cwd())):
        if len(path.parts) > 1:
            pats.append((f"{label} {path}", re.compile(re.escape(str(path)))))
    pats.append((f"interpreter prefix {sys.prefix}", re.compile(re.escape(sys.prefix))))
    with contextlib.suppress(Exception):
        user = getpass.getuser()
        pats.append((f"user name {user}", re.compile(rf"(?<![\w-]){re.escape(user)}(?![\w-])")))
    return pats


def check_private(stage: Path) -> None:
    """Refuse to write a package that would leak a path or the user's name."""
    pats = private_strings()
    for f in sorted(stage.rglob("*")):
        if not f.is_file() or f.suffix in (".png", ".pdf"):
            continue
        text = f.read_bytes().decode("utf-8", errors="replace")
        for label, pat in pats:
            if pat.search(text):
                rel = f.relative_to(stage)
                raise UserError(
                    f"the package would contain the {label} in {rel}; rename the study or "
                    "store fields that hold it and package again"
                )


def write_tar(stage: Path, out: Path) -> None:
    """A reproducible tar.gz of ``stage`` (top directory = stage's name)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for p in [stage, *sorted(stage.rglob("*"))]:
            info = tar.gettarinfo(str(p), arcname=str(Path(stage.name) / p.relative_to(stage)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755 if p.is_dir() else 0o644
            if p.is_file():
                with p.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    tmp = out.with_name(f".{out.name}.part")
    with tmp.open("wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(buf.getvalue())
    tmp.replace(out)


def package_name(study: str) -> str:
    return re.sub(r"[^\w.-]+", "_", study).strip("._") or "study"


def is_package(path: Path) -> bool:
    """Whether ``path`` is an archive `loraplace package` wrote (a root/MANIFEST.json)."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            return any(n.count("/") == 1 and n.endswith(f"/{MANIFEST}") for n in tar.getnames())
    except (tarfile.TarError, OSError, EOFError):
        return False


def check_finished(data) -> None:
    """A package is of a study no process is writing, none of whose runs is running."""
    holder = live_holder(Path(data.store_path))
    if holder is not None:
        raise UserError(
            f"{data.store_path} is being written by {holder}: package the study when it has "
            "ended (a package of a running study would hold runs not yet finished)"
        )
    with Store(data.store_path, create=False, writer=False) as store:
        running = store.marked_running(data.study_id)
    if running:
        raise UserError(
            f"run {running[0]} of study {data.name!r} is still marked running (its driver "
            "stopped): run the study again to finish it, then package it"
        )


def package_target(out: str | Path | None, root: str) -> Path:
    """Where the archive goes: a new file in a writable directory, or an old package."""
    target = Path(out) if out is not None else Path(f"{root}.tar.gz")
    if target.is_dir():
        target = target / f"{root}.tar.gz"
    if not target.parent.is_dir():
        raise UserError(f"{target.parent} is not a directory; choose another --out")
    if target.is_dir() or (target.exists() and not is_package(target)):
        raise UserError(
            f"{target} exists and is not a loraplace package: choose another --out "
            "(an earlier package is replaced; nothing else is overwritten)"
        )
    check_writable(target.parent, "package directory", "--out")
    return target


def make_package(
    store: str | Path, out: str | Path | None = None, *, study: str | None = None
) -> PackageResult:
    """Write the study's package; ``out`` defaults to ./<study>-package.tar.gz."""
    data = read_study_data(store, study)
    check_finished(data)
    name = data.name
    root = f"{package_name(name)}-package"
    target = package_target(out, root)
    with tempfile.TemporaryDirectory(prefix="loraplace-package-") as tmp:
        stage = Path(tmp) / root
        stage.mkdir()
        name, scrubbed = _stage(Path(store).resolve(), study, stage, target.name)
        check_private(stage)
        n_files = sum(1 for p in stage.rglob("*") if p.is_file())
        write_tar(stage, target)
    return PackageResult(target, name, n_files, target.stat().st_size, scrubbed)


def extract(archive: Path, dest: Path) -> Path:
    """Unpack a package safely (no absolute or parent paths); return its root directory."""
    if not archive.is_file():
        raise UserError(f"no package at {archive}; give the .tar.gz that `loraplace package` wrote")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"{archive} is not a readable package ({exc})") from None
    roots = [p for p in dest.iterdir() if (p / MANIFEST).is_file()]
    if len(roots) != 1:
        raise UserError(f"{archive} holds no {MANIFEST}: it is not a loraplace package")
    outside = sorted(p.name for p in dest.iterdir() if p != roots[0])
    if outside:  # unverified files would travel with the verified ones
        raise UserError(
            f"{archive} holds {len(outside)} member(s) outside its package folder "
            f"{roots[0].name}/ (first: {outside[0]}): not an archive `loraplace package` "
            "wrote; ask for the package itself"
        )
    return roots[0]
