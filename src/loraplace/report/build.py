"""``loraplace report``: the store in, a directory of report, tables and figures out.

Everything is built in a temporary sibling directory and renamed into place at the end,
so an error leaves the previous report (or nothing) rather than half a report.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from loraplace.analysis import read_study_data, summarize
from loraplace.analysis.fair import compare
from loraplace.analysis.models import compare_models
from loraplace.errors import UserError
from loraplace.outdir import check_writable
from loraplace.report import tables as tb
from loraplace.report.bib import add_references, to_bibtex
from loraplace.report.latex import BIB_NAME, to_latex
from loraplace.report.render import to_html, to_markdown
from loraplace.report.reproducibility import file_manifest, reproducibility
from loraplace.report.sections import build_document
from loraplace.store import resolve_store_path

REPORT_MARKERS = ("report.md", "manifest.json")  # what makes a directory ours to replace


@dataclass(frozen=True)
class ReportOutput:
    """Where the report went and what it holds."""

    out: Path
    study: str
    files: list[str]  # paths relative to ``out``
    seconds: float


def default_out(store_arg: str | Path) -> Path:
    return resolve_store_path(store_arg).parent / "report"


def build_report(
    store: str | Path,
    out: str | Path | None = None,
    *,
    study: str | None = None,
    reference: str | None = None,
    metric: str = "loss",
) -> ReportOutput:
    """Read the store, analyse, and write the report directory atomically.

    metric: the headline, "loss" or a task metric ("accuracy", "task:<name>").
    """
    from loraplace.analysis.task_metrics import resolve_metric

    t0 = time.perf_counter()
    data = read_study_data(store, study)
    # A study across models: the headline is the first model's; the Models section has all.
    models = compare_models(data, reference)
    fair = models.fairs[models.models[0]] if models is not None else compare(data, reference)
    # The headline: the first task's chosen settings (on test when there is a test split).
    s = fair.tasks[0].summary if fair.tasks else summarize(data, reference)
    metric = resolve_metric(s, metric)
    if not s.placements:
        counts = ", ".join(f"{r.placement}:{r.status}" for r in data.runs[:6]) or "no runs"
        raise UserError(
            f"study {data.name!r} has no finished trained runs to report ({counts}); "
            "run `loraplace run` until at least one placement finishes"
        )
    out_dir = Path(out) if out is not None else default_out(store)
    out_dir = out_dir.resolve()
    if out_dir.exists() and (
        not out_dir.is_dir()
        or (any(out_dir.iterdir()) and not any((out_dir / m).exists() for m in REPORT_MARKERS))
    ):
        raise UserError(f"{out_dir} exists and is not a loraplace report; choose another --out")
    check_writable(out_dir, "report directory", "--out")
    if out_dir.exists():  # the new report is made beside it, then swapped in
        check_writable(out_dir.parent, "report directory", "--out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=_owned(out_dir, "tmp") + "-", dir=out_dir.parent))
    try:
        repro = reproducibility(data, str(store))
        doc, tables = build_document(s, str(store), repro, tmp / "figures", metric, fair, models)
        _write_texts(tmp, doc, tables)
        (tmp / "report.html").write_text(to_html(doc))  # embeds the PNGs, written whole
        (tmp / "manifest.json").write_text(
            json.dumps(
                {"reproducibility": repro, "files": file_manifest(tmp)}, indent=2, default=str
            )
            + "\n"
        )
        files = [f["path"] for f in file_manifest(tmp)]
        _swap(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ReportOutput(out_dir, data.name, files, time.perf_counter() - t0)


def _write_texts(tmp: Path, doc, tables: list[tb.Table]) -> None:
    """The tables (Markdown, LaTeX, CSV), the Markdown and LaTeX report and its BibTeX:
    everything that does not read the figure files."""
    cited = add_references(doc)
    tdir = tmp / "tables"
    tdir.mkdir()
    for t in tables:
        (tdir / f"{t.name}.md").write_text(tb.to_markdown(t) + "\n")
        (tdir / f"{t.name}.tex").write_text(tb.to_latex(t))
        (tdir / f"{t.name}.csv").write_text(tb.to_csv(t))
    (tmp / "report.md").write_text(to_markdown(doc))
    (tmp / "report.tex").write_text(to_latex(doc))
    (tmp / f"{BIB_NAME}.bib").write_text(to_bibtex(cited))


def _swap(tmp: Path, out_dir: Path) -> None:
    """Put ``tmp`` where ``out_dir`` is, replacing an older report with two renames."""
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a report is meant to be read
    if not out_dir.exists():
        tmp.rename(out_dir)
        return
    old = out_dir.with_name(_owned(out_dir, "old"))
    out_dir.rename(old)
    try:
        tmp.rename(out_dir)
    except BaseException:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _owned(out_dir: Path, kind: str) -> str:
    """``.report-tmp-<pid>-<host>``: a work folder's name says which process owns it, so a
    report killed midway (SIGKILL, power loss) leaves folders a later report can remove."""
    return f".{out_dir.name}-{kind}-{os.getpid()}-{_host()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale(out_dir: Path) -> list[Path]:
    """Remove the work folders of ``out_dir`` left by report processes that are gone.

    Only folders named by ``_owned`` for this host whose process no longer exists: a
    report running beside this one (its pid alive), or on another machine sharing the
    directory (another host), is left alone. Returns what was removed.
    """
    pattern = re.compile(
        rf"\.{re.escape(out_dir.name)}-(?:tmp|old)-(\d+)-([0-9a-f]{{8}})(?:-.*)?", re.DOTALL
    )
    removed = []
    for path in out_dir.parent.glob(f".{glob.escape(out_dir.name)}-*"):
        m = pattern.fullmatch(path.name)
        if m is None or m.group(2) != _host() or int(m.group(1)) == os.getpid():
            continue
        if path.is_dir() and not path.is_symlink() and not _alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
