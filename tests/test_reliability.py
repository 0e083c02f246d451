"""The fault catalogue: every mistake a user can make is one line on stderr, exit code 2.

Each class of fault (issue 12) holds at least two cases. Every case asserts the exit
code, exactly one line on stderr with no traceback, and, where it matters, that nothing
was written. The CLI usage errors run the real console script in a subprocess, so they
test the typer/click that is installed, not a mock of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import loraplace

SCRIPT = Path(sys.executable).parent / "loraplace"
SRC = str(Path(loraplace.__file__).resolve().parents[1])


def console_script(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The installed `loraplace` script, importing this checkout's source."""
    env = dict(os.environ, PYTHONPATH=SRC, COLUMNS="200")
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "loraplace"]
    return subprocess.run(cmd + args, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def assert_one_line(proc, needle: str) -> None:
    """Exit 2, one stderr line that names the problem, no traceback."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert needle in lines[0], lines[0]


# -- 1. CLI usage errors, every verb: (argv, a phrase the one line must hold) ----------

USAGE_ERRORS = [
    (["frobnicate"], "No such command 'frobnicate'"),
    (["--bogus"], "No such option: --bogus"),
    (["inspect"], "Missing argument"),
    (["inspect", "tiny-markov", "--bogus"], "--bogus"),
    (["plan"], "Missing argument"),
    (["plan", "tiny-markov", "mlp", "--rank", "abc"], "--rank"),
    (["plan", "tiny-markov", "mlp", "--alpha", "big"], "--alpha"),
    (["export", "tiny-markov"], "Missing argument"),
    (["export", "tiny-markov", "mlp", "--dropout", "x"], "--dropout"),
    (["run", "--executor"], "--executor"),
    (["run", "--cpus-per-run", "many"], "--cpus-per-run"),
    (["status", "a", "b"], "unexpected extra argument"),
    (["status", "--bogus"], "--bogus"),
    (["report", "--out"], "--out"),
    (["report", "a", "b"], "unexpected extra argument"),
    (["data", "frob"], "No such command 'frob'"),
    (["data", "info"], "Missing argument"),
    (["data", "info", "markov-mix", "--block-size", "abc"], "--block-size"),
    (["probe", "tiny-markov"], "Missing argument"),
    (["probe", "tiny-markov", "markov-mix", "--batches", "x"], "--batches"),
    (["search", "--trials", "abc"], "--trials"),
    (["search", "--bogus"], "--bogus"),
    (["recommend"], "Missing argument"),
    (["recommend", "runs", "--bogus"], "--bogus"),
]


@pytest.fixture(scope="module")
def usage_results(tmp_path_factory):
    """Every usage case, run at once (each is a fresh interpreter)."""
    cwd = tmp_path_factory.mktemp("usage")
    with ThreadPoolExecutor(max_workers=8) as pool:
        procs = pool.map(lambda case: console_script(case[0], cwd=cwd), USAGE_ERRORS)
        results = {" ".join(case[0]): p for case, p in zip(USAGE_ERRORS, procs, strict=True)}
    assert not any(cwd.iterdir()), "a usage error wrote files"
    return results


@pytest.mark.parametrize("argv,needle", USAGE_ERRORS, ids=[" ".join(c[0]) for c in USAGE_ERRORS])
def test_usage_error_is_one_line(usage_results, argv, needle):
    assert_one_line(usage_results[" ".join(argv)], needle)


def test_bare_command_shows_help(tmp_path):
    proc = console_script([], cwd=tmp_path)
    # click >= 8.2 exits 2 after no-args help (NoArgsIsHelpError), click 8.1 exits 0.
    assert proc.returncode in (0, 2)
    assert "Traceback" not in proc.stderr
    assert "plan" in proc.stdout + proc.stderr


# -- 2. user strings are text, never rich markup --------------------------------------

ODD_NAMES = ["a[/x]b", "[bold]b[/bold]", "q'\"uote", "<b>html</b>&amp;", "çà-ü-名"]


def test_odd_names_are_shown_verbatim_by_run_and_status(tmp_path, capsys):
    import yaml
    from run_fixtures import tiny_study

    from loraplace.cli import run_cli

    # Distinct ranks make distinct runs (a run id hashes what is trained, not the label).
    placements = [{"name": n, "preset": "mlp-down", "rank": i + 1} for i, n in enumerate(ODD_NAMES)]
    out_dir = tmp_path / "o[b]ut"
    config = tiny_study(
        tmp_path, name="st[red]udy", placements=placements, seeds=[0], out=str(out_dir)
    )
    config["train"]["steps"] = 1
    study = tmp_path / "odd[x].yaml"
    study.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert run_cli(["run", str(study)]) == 0
    out = capsys.readouterr().out
    assert run_cli(["status", str(out_dir)]) == 0
    status = capsys.readouterr().out
    for name in ODD_NAMES:
        assert name in out, name  # the progress line and the results table
        assert name in status, name
    assert "st[red]udy" in out and "st[red]udy" in status
    assert "o[b]ut" in " ".join(status.split())
