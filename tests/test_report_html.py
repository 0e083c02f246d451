"""report.html: self-contained, user strings escaped, and it renders in headless Chromium
with no console errors (the screenshot is kept under test-artifacts/)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_fixtures import SCRIPT, make_store

from loraplace.report import build_report

# Whole studies end to end: `pytest -m "not slow"` skips them.
pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture(scope="module")
def html_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("html")
    db = make_store(root / "loraplace.db")
    return build_report(db, root / "report").out / "report.html"


def test_html_is_self_contained_and_escaped(html_path):
    html = html_path.read_text()
    assert ESCAPED in html
    assert SCRIPT not in html
    assert not re.search(r"<script", html, re.I)  # no script element, escaped or not
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    srcs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert html.count("<figure") == 4 and html.count("<table") == 11  # 2 Methods, 1 seed plan


def _chromium(args: list[str], user_dir: Path) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_dir}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _console_lines(stderr: str) -> list[str]:
    """Lines Chromium logs for page console messages and uncaught errors."""
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


@pytest.mark.needs_tool("chromium", CHROMIUM is not None, "apt-get install chromium")
def test_renders_in_chromium_without_console_errors(html_path, tmp_path):
    # Control: the detector sees console errors on a page that makes them.
    bad = tmp_path / "control.html"
    bad.write_text("<!DOCTYPE html><p>x</p><script>console.error('control-error')</script>")
    ctl = _chromium(["--dump-dom", bad.as_uri()], tmp_path / "ud0")
    assert any("control-error" in ln for ln in _console_lines(ctl.stderr)), ctl.stderr[-2000:]

    dom = _chromium(["--dump-dom", html_path.as_uri()], tmp_path / "ud1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_lines(dom.stderr) == []
    # The placement is text in the rendered DOM, never an element.
    assert ESCAPED in dom.stdout and not re.search(r"<script", dom.stdout, re.I)
    assert "Results per placement" in dom.stdout and dom.stdout.count("<img") == 4

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report_html.png"
    shot.unlink(missing_ok=True)
    res = _chromium(
        [f"--screenshot={shot}", "--window-size=1280,2000", html_path.as_uri()], tmp_path / "ud2"
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert _console_lines(res.stderr) == []
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one
    shutil.copy(html_path, ARTIFACTS / "report.html")


def test_html_embeds_each_figure_whole_even_when_png_encoding_lags(tmp_path, monkeypatch):
    """The HTML embeds each PNG whole, however slow its encoding (once a race: issue 25)."""
    import base64
    import time

    from loraplace.report import png

    encode = png._encode

    def slow(*args):
        time.sleep(0.3)  # the encoder still busy when the texts are written
        encode(*args)

    monkeypatch.setattr(png, "_encode", slow)
    out = build_report(make_store(tmp_path / "loraplace.db"), tmp_path / "report").out
    html = (out / "report.html").read_text()
    embedded = [
        base64.b64decode(s) for s in re.findall(r'src="data:image/png;base64,([^"]*)"', html)
    ]
    files = [p.read_bytes() for p in sorted((out / "figures").glob("*.png"))]
    assert len(embedded) == 4 and sorted(embedded) == sorted(files)
