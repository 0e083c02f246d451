"""report.pdf: report.tex compiled by a TeX engine, or report.html printed by Chromium.

TeX gives the paper (booktabs, BibTeX, vector figures); a user without TeX still gets a
PDF of the same document from headless Chromium. Both run as subprocesses in the report
directory, with SOURCE_DATE_EPOCH fixed so that the same report gives the same PDF bytes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loraplace.errors import UserError

PDF_NAME = "report.pdf"
_ENV = {"SOURCE_DATE_EPOCH": "0", "FORCE_SOURCE_DATE": "1"}
_UNDEFINED = re.compile(r"(Reference|Citation) `[^']*' .*undefined|There were undefined")


@dataclass(frozen=True)
class PdfResult:
    path: Path
    engine: str  # "latexmk", "pdflatex" or "chromium"
    problems: list[str]  # errors and undefined references from the TeX log


def tex_engine() -> str | None:
    """latexmk (which runs BibTeX itself) or plain pdflatex + bibtex; None without TeX."""
    if shutil.which("latexmk") and shutil.which("pdflatex"):
        return "latexmk"
    if shutil.which("pdflatex") and shutil.which("bibtex"):
        return "pdflatex"
    return None


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, **_ENV}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def log_problems(log_text: str) -> list[str]:
    """TeX errors ('! ...') and undefined references or citations in a pdflatex log."""
    lines = log_text.splitlines()
    errors = [ln for ln in lines if ln.startswith("!") or ".tex:" in ln and " error" in ln]
    return errors + [ln.strip() for ln in lines if _UNDEFINED.search(ln)]


def compile_tex(report_dir: Path, engine: str | None = None) -> PdfResult:
    """report.tex -> report.pdf in ``report_dir``; raises UserError when TeX fails.

    TeX runs in a scratch copy, so its aux, log and bbl files never join the report.
    """
    engine = engine or tex_engine()
    if engine is None:
        raise UserError("no TeX engine found: install latexmk and pdflatex, or use --pdf html")
    with tempfile.TemporaryDirectory(prefix="loraplace-tex-") as scratch:
        work = Path(scratch)
        for name in ("report.tex", "references.bib"):
            shutil.copy2(report_dir / name, work / name)
        if (report_dir / "figures").is_dir():
            shutil.copytree(report_dir / "figures", work / "figures")
        res = _tex_steps(engine, work)
        log = work / "report.log"
        problems = log_problems(log.read_text(errors="replace")) if log.exists() else []
        if res.returncode != 0 or not (work / PDF_NAME).exists():
            if log.exists():
                shutil.copy2(log, report_dir / "report.log")
            first = problems[0] if problems else (res.stderr or res.stdout).strip()[-300:]
            raise UserError(
                f"report.tex did not compile ({engine}): {first}; see {report_dir}/report.log"
            )
        shutil.copy2(work / PDF_NAME, report_dir / PDF_NAME)
    return PdfResult(report_dir / PDF_NAME, engine, problems)


def _tex_steps(engine: str, work: Path) -> subprocess.CompletedProcess:
    flags = ["-interaction=nonstopmode", "-halt-on-error", "-file-line-error"]
    if engine == "latexmk":
        steps = [["latexmk", "-pdf", "-quiet", *flags, "report.tex"]]
    else:
        tex = ["pdflatex", *flags, "report.tex"]
        steps = [tex, ["bibtex", "report"], tex, tex]
    for cmd in steps:
        res = _run(cmd, work)
        if res.returncode != 0 and cmd[0] != "bibtex":
            break
    return res


def print_html(report_dir: Path, out: Path | None = None) -> PdfResult:
    """report.html -> a PDF printed by headless Chromium (for users without TeX)."""
    exe = chromium()
    if exe is None:
        raise UserError("no chromium found: install it (apt-get install chromium) or TeX")
    out = out or report_dir / PDF_NAME
    html = (report_dir / "report.html").resolve()
    with tempfile.TemporaryDirectory(prefix="loraplace-chromium-") as profile:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            f"--user-data-dir={profile}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={out.resolve()}",
            html.as_uri(),
        ]
        res = _run(cmd, report_dir, timeout=180)
    if res.returncode != 0 or not out.exists():
        raise UserError(f"chromium could not print report.html: {res.stderr.strip()[-300:]}")
    return PdfResult(out, "chromium", [])


def check_pdf(how: str) -> None:
    """The --pdf choice is known and its engine installed: checked before a report is
    written, so a bad option costs no report."""
    if how not in ("auto", "tex", "html"):
        raise UserError(f"--pdf {how!r} is not one of auto, tex, html")
    if how == "tex" and tex_engine() is None:
        raise UserError("no TeX engine found: install latexmk and pdflatex, or use --pdf html")
    if how == "html" and chromium() is None:
        raise UserError("no chromium found: install it (apt-get install chromium) or TeX")
    if how == "auto" and tex_engine() is None and chromium() is None:
        raise UserError("--pdf auto: neither TeX nor chromium is installed: install one")


def make_pdf(report_dir: Path, how: str = "auto") -> PdfResult:
    """how: 'tex', 'html', or 'auto' (TeX when installed, else Chromium)."""
    if how == "tex" or (how == "auto" and tex_engine() is not None):
        return compile_tex(report_dir)
    if how in ("html", "auto"):
        return print_html(report_dir)
    raise UserError(f"--pdf {how!r} is not one of auto, tex, html")
