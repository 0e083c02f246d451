"""The fault catalogue, round 3 (issue 26): no silent success, no store lost to a false
diagnosis, no traceback.

Each case is marked with its class (``fault``, tallied by tests/conftest.py). Where the
console script itself is the point (exit codes, tracebacks) it runs in a subprocess, as a
new user would run it; the rest call ``run_cli`` in-process, which is faster.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
import yaml
from run_fixtures import OBJECTS, SUBJECTS, VERBS, tiny_study
from test_reliability import assert_cli_one_line, cli, one_run_study

fault = pytest.mark.fault


def _pairs_jsonl(tmp: Path, n: int = 24, **extra) -> Path:
    """Prompt-completion data (no choices field unless extra gives one)."""
    rows = [
        {"prompt": f"{SUBJECTS[i % 6]} {VERBS[i % 5]}", "completion": f" {OBJECTS[i % 6]} ."}
        | extra
        for i in range(n)
    ]
    path = tmp / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _study_file(tmp: Path, config: dict, name: str = "study.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# -- run lifecycle: what can be checked before training is; failed runs are not success ---


@fault("run-lifecycle")
def test_a_choice_task_on_data_without_choices_is_refused_before_any_write(tmp_path, capsys):
    config = tiny_study(
        tmp_path,
        dataset=str(_pairs_jsonl(tmp_path)),
        placements=["mlp-down"],
        seeds=[0],
        data={"val_fraction": 0.25},
    )
    config["train"]["steps"] = 1
    config["eval"]["tasks"] = [{"name": "mc", "kind": "choice"}]
    result = cli(capsys, ["run", str(_study_file(tmp_path, config))])
    assert_cli_one_line(result, "task 'mc' is a choice task, but an example of the val split")
    assert not (tmp_path / "out").exists()


@fault("run-lifecycle")
def test_an_lm_eval_task_whose_data_cannot_be_read_is_refused_before_training(
    tmp_path, capsys, monkeypatch
):
    pytest.importorskip("lm_eval")
    import loraplace.executors.local as local

    def no_training(*a, **k):  # the check must come first: training is never reached
        raise AssertionError("a run trained")

    monkeypatch.setattr(local, "train_run", no_training)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "gone_mc.yaml").write_text(  # its data file does not exist (as the hub offline)
        "task: gone_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'missing.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{q}}'\n"
        "doc_to_choice: '{{c}}'\ndoc_to_target: 0\nmetric_list:\n  - metric: acc\n"
    )
    config = tiny_study(tmp_path, placements=["mlp-down"], seeds=[0], zero_shot=False)
    config["train"]["steps"] = 1
    config["eval"]["tasks"] = [
        {"name": "mc", "kind": "lm-eval", "task": "gone_mc", "include_path": str(tasks)}
    ]
    result = cli(capsys, ["run", str(_study_file(tmp_path, config))])
    assert_cli_one_line(result, "lm-eval task 'gone_mc' cannot be loaded (")
    assert not (tmp_path / "out").exists()


@fault("run-lifecycle")
def test_a_study_with_failed_runs_exits_1_with_one_line(tmp_path, capsys, monkeypatch):
    import loraplace.executors.local as local

    def broken(spec, *a, **k):
        raise RuntimeError("CUDA error: an illegal memory access")

    monkeypatch.setattr(local, "train_run", broken)
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, ["run", str(one_run_study(tmp_path))])
    assert code == 1, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == [
        f"error: 1 of 1 runs failed: `loraplace status {out}` lists each run's error; "
        "fix it and run the same command again (finished runs are kept)"
    ]
    assert "ran 1 of 1 runs" in stdout and "(1 failed)" in stdout
    monkeypatch.undo()  # the failed run is redone, and the study then succeeds
    code, stdout, err = cli(capsys, ["run", str(one_run_study(tmp_path))])
    assert code == 0, err
    assert "ran 1 of 1 runs" in stdout and "(1 done)" in stdout


# -- the store: created whole, under the writer lock ----------------------------------------


class _FullDisk(sqlite3.Connection):
    """A connection whose schema_version insert finds the disk full (the last step of
    creating a store, after its tables)."""

    def execute(self, sql, *args):
        if sql.startswith("INSERT OR IGNORE INTO meta"):
            raise sqlite3.OperationalError("database or disk is full")
        return super().execute(sql, *args)


@fault("store")
def test_a_full_disk_while_the_store_is_created_leaves_no_store_behind(
    tmp_path, capsys, monkeypatch
):
    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real(*a, factory=_FullDisk, **k))
    study = one_run_study(tmp_path)
    result = cli(capsys, ["run", str(study)])
    assert_cli_one_line(result, "(SQLite: database or disk is full): free disk space")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["loraplace.db.lock"]  # no store file
    monkeypatch.undo()  # disk space freed: the next run creates the store and runs
    code, stdout, err = cli(capsys, ["run", str(study)])
    assert code == 0, err
    assert "ran 1 of 1 runs" in stdout and "(1 done)" in stdout


@fault("store")
def test_a_second_writer_on_a_fresh_directory_names_the_first_not_an_empty_store(tmp_path):
    """The window of the race: the first writer has made the store file and is creating
    its tables when the second one looks. The second must say the store is busy."""
    from loraplace.store import Store

    out = tmp_path / "out"
    seen: list[str] = []
    creating = threading.Event()
    release = threading.Event()
    real = sqlite3.connect

    class Slow(sqlite3.Connection):
        def execute(self, sql, *args):
            if not creating.is_set():  # the first statement of the first writer's creation
                creating.set()
                release.wait(10)
            return super().execute(sql, *args)

    def first():
        with Store(out):
            pass

    def slow_connect(*a, **k):
        if threading.current_thread().name == "first":
            return real(*a, factory=Slow, **k)
        return real(*a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sqlite3, "connect", slow_connect)
        t = threading.Thread(target=first, name="first")
        t.start()
        assert creating.wait(10)
        try:
            Store(out)
        except Exception as exc:  # noqa: BLE001 - the message is the point
            seen.append(str(exc))
        finally:
            release.set()
            t.join(10)
    assert len(seen) == 1 and "is being written by pid" in seen[0], seen
    with Store(out, create=False, writer=False) as store:  # the first writer's store is whole
        assert store.runs() == []


# -- package and verify: only a finished study, only what the package folder holds ------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """(output dir, archive) of a finished study of two one-step runs (seeds 0 and 1)."""
    from loraplace.cli import run_cli

    tmp = tmp_path_factory.mktemp("finished")
    assert run_cli(["run", str(one_run_study(tmp, seeds=[0, 1]))]) == 0
    archive = tmp / "one.tar.gz"
    assert run_cli(["package", str(tmp / "out"), "--out", str(archive)]) == 0
    return tmp / "out", archive


@fault("package-verify")
def test_package_refuses_to_overwrite_a_file_that_is_not_a_package(finished, tmp_path, capsys):
    out, archive = finished
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    result = cli(capsys, ["package", str(out), "--out", str(notes)])
    assert_cli_one_line(result, f"{notes} exists and is not a loraplace package")
    assert notes.read_text() == "my notes\n"
    again = tmp_path / "again.tar.gz"  # an earlier package is replaced, as before
    again.write_bytes(archive.read_bytes())
    assert cli(capsys, ["package", str(out), "--out", str(again)])[0] == 0


def _hold_running(out: Path):
    """The study's store held by a writer (this process) with its run marked running."""
    from loraplace.store import Store

    store = Store(out)
    store.mark_running(store.runs()[0]["run_id"])
    return store


@fault("package-verify")
def test_package_of_a_study_being_written_is_refused(finished, tmp_path, capsys):
    out, _ = finished
    store = _hold_running(out)
    try:
        result = cli(capsys, ["package", str(out), "--out", str(tmp_path / "live.tar.gz")])
    finally:
        store.mark(store.runs()[0]["run_id"], "done")
        store.close()
    assert_cli_one_line(result, "is being written by pid")
    assert not (tmp_path / "live.tar.gz").exists()


@fault("package-verify")
def test_verify_fails_a_package_that_holds_a_running_run(finished, tmp_path, capsys, monkeypatch):
    import loraplace.package.archive as archive_mod

    out, _ = finished
    monkeypatch.setattr(archive_mod, "check_finished", lambda data: None)  # as older versions
    live = tmp_path / "live.tar.gz"
    store = _hold_running(out)
    try:
        code, _, err = cli(capsys, ["package", str(out), "--out", str(live)])
        assert code == 0, err
    finally:
        store.mark(store.runs()[0]["run_id"], "done")
        store.close()
    code, stdout, _ = cli(capsys, ["verify", str(live), "--runs", "0"])
    assert code == 1
    fails = [ln for ln in stdout.splitlines() if ln.startswith("FAIL ")]
    assert len(fails) == 1 and "marked running in the packaged store" in fails[0], stdout


@fault("package-verify")
def test_verify_refuses_an_archive_with_members_outside_its_package_folder(
    finished, tmp_path, capsys
):
    import io
    import tarfile

    _, archive = finished
    bad = tmp_path / "extra.tar.gz"
    with tarfile.open(archive, "r:gz") as src, tarfile.open(bad, "w:gz") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        extra = tarfile.TarInfo("run-me.sh")
        extra.size = 10
        dst.addfile(extra, io.BytesIO(b"rm -rf ~\n\n"))
    result = cli(capsys, ["verify", str(bad), "--runs", "0"])
    assert_cli_one_line(result, "holds 1 member(s) outside its package folder")
    assert "(first: run-me.sh)" in result[2]


# -- search -----------------------------------------------------------------------------------


@fault("search")
@pytest.mark.parametrize("trials", ["0", "-1"])
def test_search_without_trials_is_refused_before_any_write(tmp_path, capsys, trials):
    pytest.importorskip("optuna")
    result = cli(capsys, ["search", str(one_run_study(tmp_path)), "--trials", trials])
    assert_cli_one_line(result, f"--trials {trials}: a search needs at least 1 trial")
    assert not (tmp_path / "out").exists()


@fault("search")
def test_a_search_whose_trials_failed_exits_1_naming_the_count(tmp_path, capsys, monkeypatch):
    pytest.importorskip("optuna")
    from loraplace.executors import local

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(local, "train_run", broken)
    code, _, err = cli(capsys, ["search", str(one_run_study(tmp_path)), "--trials", "2"])
    assert code == 1, err
    assert err.strip().splitlines()[-1].startswith("error: 2 of 2 runs failed: "), err


# -- study files: values inside lists ---------------------------------------------------------


@fault("study-file")
@pytest.mark.parametrize(
    "placement, needle",
    [
        ({"roles": ["mlp"], "rank": 0}, "rank must be above 0 (got 0)"),
        ({"roles": ["mlp"], "alpha": -1}, "alpha must be above 0 (got -1.0)"),
        ({"roles": ["mlp"], "role_rank": {"mlp.up": 0}}, "role_rank mlp.up: a rank must be"),
    ],
    ids=["rank-0", "alpha-negative", "role-rank-0"],
)
def test_a_placement_entry_out_of_bounds_is_one_line(tmp_path, capsys, placement, needle):
    """rank: 0 in a placement entry read as unset, and trained the default rank 8."""
    study = one_run_study(tmp_path, placements=[placement])
    assert_cli_one_line(cli(capsys, ["run", str(study)]), needle)
    assert not (tmp_path / "out").exists()


# -- instruction data: chat templates that do not render -------------------------------------

BROKEN_TEMPLATES = [
    ("{% for m in messages %}{{ m.content }", "TemplateSyntaxError: unexpected '}'"),
    ("{{ raise_exception('only user turns') }}", "TemplateError: only user turns"),
    ("{% for m in messages %}{{ m.content + 1 }}{% endfor %}", "TypeError: can only concatenate"),
    ("{% for m in messages %}{{ m.nope.deeper }}{% endfor %}", "UndefinedError: 'dict object'"),
]


@fault("instruction-data")
@pytest.mark.parametrize(
    "template, needle", BROKEN_TEMPLATES, ids=["syntax", "raise", "type", "undefined"]
)
def test_a_chat_template_that_fails_to_render_is_one_line_before_training(
    tmp_path, capsys, template, needle
):
    rows = [
        {
            "messages": [
                {"role": "user", "content": "the cat sees"},
                {"role": "assistant", "content": "the moon ."},
            ]
        }
    ] * 12
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    study = one_run_study(tmp_path, dataset=str(data), data={"chat_template": template})
    result = cli(capsys, ["run", str(study)])
    assert_cli_one_line(result, f"data.chat_template fails on conversation 1 ({needle}")
    assert not (tmp_path / "out").exists()


# -- adapters: damaged adapter directories for `loraplace audit` ------------------------------


@pytest.fixture(scope="module")
def saved_adapter(tmp_path_factory) -> tuple[dict, bytes]:
    """(adapter_config.json, adapter_model.safetensors bytes) of a real PEFT adapter."""
    from families import peft_model_of_saved_config
    from peft import LoraConfig

    out = tmp_path_factory.mktemp("adapter") / "a"
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    peft_model_of_saved_config("mixtral", lora).save_pretrained(out)
    config = json.loads((out / "adapter_config.json").read_text())
    return config, (out / "adapter_model.safetensors").read_bytes()


def _damaged(config: dict, weights: bytes, case: str) -> tuple[bytes, bytes]:
    raw = json.dumps(config).encode()
    return {
        "truncated-weights": (raw, weights[: len(weights) // 2]),
        "empty-weights": (raw, b""),
        "config-a-list": (b"[1, 2]", weights),
        "config-not-text": (b"\xff\xfe\x00garbage", weights),
        "r-a-string": (json.dumps({**config, "r": "x"}).encode(), weights),
        "alpha-null": (json.dumps({**config, "lora_alpha": None}).encode(), weights),
        "rank-pattern-a-list": (json.dumps({**config, "rank_pattern": [1]}).encode(), weights),
    }[case]


DAMAGED_ADAPTERS = [
    ("truncated-weights", "is damaged or not a safetensors file (Error while deserializing"),
    ("empty-weights", "is damaged or not a safetensors file (Error while deserializing"),
    ("config-a-list", "adapter_config.json holds a JSON list, not a PEFT adapter config"),
    ("config-not-text", "adapter_config.json cannot be read as text ("),
    ("r-a-string", 'adapter_config.json: r is "x", not an integer'),
    ("alpha-null", "adapter_config.json: lora_alpha is null, not a number"),
    ("rank-pattern-a-list", "adapter_config.json: rank_pattern is [1], not an object"),
]


@fault("adapters")
@pytest.mark.parametrize("case, needle", DAMAGED_ADAPTERS, ids=[c for c, _ in DAMAGED_ADAPTERS])
def test_audit_of_a_damaged_adapter_is_one_line(saved_adapter, tmp_path, capsys, case, needle):
    config, weights = _damaged(*saved_adapter, case)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_bytes(config)
    (adapter / "adapter_model.safetensors").write_bytes(weights)
    assert_cli_one_line(cli(capsys, ["audit", str(adapter)]), needle)


# -- output paths: read-only locations, files where directories go and back -----------------


def _read_only(monkeypatch, directory: Path) -> None:
    """Writes under ``directory`` fail as on a read-only file system (root ignores chmod)."""
    import builtins
    import errno
    import os

    def guard(path) -> None:
        if Path(os.path.abspath(path)).is_relative_to(directory.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    real_mkdir, real_open, real_builtin_open = os.mkdir, os.open, builtins.open

    def mkdir(path, *a, **k):
        guard(path)
        return real_mkdir(path, *a, **k)

    def os_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            guard(path)
        return real_open(path, flags, *a, **k)

    def builtin_open(file, mode="r", *a, **k):
        if isinstance(file, (str, Path)) and any(c in mode for c in "wax+"):
            guard(file)
        return real_builtin_open(file, mode, *a, **k)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", builtin_open)


@fault("output-paths")
@pytest.mark.parametrize("verb", ["report", "package", "export", "probe"])
def test_a_read_only_output_location_is_one_line_before_any_work(
    finished, tmp_path, capsys, monkeypatch, verb
):
    out, _ = finished
    ro = tmp_path / "ro"
    ro.mkdir()
    argv = {
        "report": ["report", str(out), "--out", str(ro / "rep")],
        "package": ["package", str(out), "--out", str(ro / "p.tar.gz")],
        "export": ["export", "tiny-markov", "mlp", "--out", str(ro / "ex")],
        "probe": ["probe", "tiny-markov", "markov-mix", "--out", str(ro / "pr")],
    }[verb]
    _read_only(monkeypatch, ro)
    result = cli(capsys, argv)
    monkeypatch.undo()
    assert_cli_one_line(result, "cannot be written (Read-only file system in")
    assert list(ro.iterdir()) == []


@fault("output-paths")
def test_a_file_where_the_report_directory_goes_is_one_line(finished, tmp_path, capsys):
    out, _ = finished
    blocker = tmp_path / "afile"
    blocker.write_text("x\n")
    result = cli(capsys, ["report", str(out), "--out", str(blocker / "rep")])
    assert_cli_one_line(result, f"{blocker} is a file: choose another --out")
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]


@fault("output-paths")
@pytest.mark.parametrize("verb", ["export", "probe"])
def test_a_directory_where_an_output_file_goes_is_one_line_and_writes_nothing(
    tmp_path, capsys, verb
):
    out = tmp_path / "o"
    name = {"export": "adapter_config.json", "probe": "probe_tiny-markov_markov-mix_s0.json"}
    (out / name[verb]).mkdir(parents=True)
    argv = {
        "export": ["export", "tiny-markov", "mlp", "--out", str(out)],
        "probe": ["probe", "tiny-markov", "markov-mix", "--out", str(out)],
    }[verb]
    result = cli(capsys, argv)
    assert_cli_one_line(result, f"{out / name[verb]} is a directory, where a file is to be")
    assert [p.name for p in out.iterdir()] == [name[verb]]  # no PNG, no .tmp beside it


# -- report options: all checked before the report is written --------------------------------


@fault("report-options")
@pytest.mark.parametrize(
    "pdf, needle",
    [("bogus", "--pdf 'bogus' is not one of auto, tex, html"), ("html", "chromium")],
)
def test_a_bad_pdf_option_is_refused_before_the_report_is_written(
    finished, tmp_path, capsys, monkeypatch, pdf, needle
):
    import loraplace.report.pdf as pdf_mod

    out, _ = finished
    monkeypatch.setattr(pdf_mod, "chromium", lambda: None)  # as on a machine without it
    result = cli(capsys, ["report", str(out), "--out", str(tmp_path / "rep"), "--pdf", pdf])
    assert_cli_one_line(result, needle)
    assert list(tmp_path.iterdir()) == []


# -- plan --memory: degenerate settings ------------------------------------------------------

MEMORY_CASES = [
    (["--batch-size", "0"], "--batch-size 0 is too small: use at least 1"),
    (["--batch-size", "-1"], "--batch-size -1 is too small: use at least 1"),
    (["--block-size", "0"], "--block-size 0 is too small: use at least 2"),
    (["--eval-batch-size", "0"], "--eval-batch-size 0 is too small: use at least 1"),
    (["--block-size", "1000000000"], "--block-size 1,000,000,000 is longer than any model's"),
    (["--batch-size", "10000000000000000000000"], "is past any device's memory"),
]


@fault("plan-memory")
@pytest.mark.parametrize("args, needle", MEMORY_CASES, ids=[" ".join(a) for a, _ in MEMORY_CASES])
def test_plan_memory_with_degenerate_settings_is_one_line(capsys, args, needle):
    result = cli(capsys, ["plan", "tiny-markov", "mlp", "--memory", *args])
    assert_cli_one_line(result, needle)


@fault("study-file")
@pytest.mark.parametrize(
    "key, value", [("seeds", [True]), ("seeds", [0, False]), ("rank", [2, True]), ("rank", True)]
)
def test_true_or_false_where_integers_go_is_one_line(tmp_path, key, value):
    """pydantic reads true as 1: `seeds: [true]` ran seed 1 without a word."""
    from loraplace.errors import UserError
    from loraplace.study.read import validate_study

    config = tiny_study(tmp_path, **{key: value})
    with pytest.raises(UserError) as exc:
        validate_study(config, "s.yaml")
    assert f"key '{key}': Value error, {key} takes integers, not true/false" in str(exc.value)
    assert "\n" not in str(exc.value)


# -- the same through the installed console script, as a new user runs it -------------------


@pytest.mark.parametrize(
    "argv, needle",
    [
        pytest.param(
            ["plan", "tiny-markov", "mlp", "--memory", "--batch-size", "0"],
            "--batch-size 0 is too small",
            marks=fault("plan-memory"),
            id="plan-memory",
        ),
        pytest.param(
            ["audit", "{adapter}"],
            "holds a JSON list, not a PEFT adapter config",
            marks=fault("adapters"),
            id="audit",
        ),
    ],
)
def test_the_console_script_prints_one_line_not_a_traceback(tmp_path, argv, needle):
    from test_reliability import assert_one_line, console_script

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("[1, 2]")
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    proc = console_script([a.replace("{adapter}", str(adapter)) for a in argv], cwd=tmp_path)
    assert_one_line(proc, needle)
