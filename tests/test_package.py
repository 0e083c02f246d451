"""``loraplace package`` and ``loraplace verify`` on a real (tiny) study.

The study is trained for real on the tiny local GPT-2, packaged, and verified from
another directory: re-trained runs must give the stored eval loss bit for bit on this
machine. A metric changed in the packaged store must be named by ``verify``.
"""

from __future__ import annotations

import getpass
import gzip
import io
import json
import re
import sqlite3
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from run_fixtures import tiny_study

from loraplace.cli import run_cli
from loraplace.package.contents import scrub
from loraplace.package.retrain import OTHER_ENV, tolerance

# Whole studies end to end: `pytest -m "not slow"` skips them.
pytestmark = pytest.mark.slow

REQUIRED = [
    "MANIFEST.json",
    "REPRODUCE.md",
    "study.yaml",
    "environment.lock",
    "environment.json",
    "fingerprints.json",
    "store/loraplace.db",
    "report/report.md",
    "report/report.tex",
    "report/references.bib",
    "report/report.html",
]


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> tuple[Path, Path]:
    """(study output dir, archive) of a 2-placement x 2-seed study + zero-shot."""
    tmp = tmp_path_factory.mktemp("pkg")
    study = tmp / "study.yaml"
    study.write_text(yaml.safe_dump(tiny_study(tmp)))
    assert run_cli(["run", str(study)]) == 0
    archive = tmp / "tiny.tar.gz"
    assert run_cli(["package", str(tmp / "out"), "--out", str(archive)]) == 0
    return tmp, archive


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {
            m.name.split("/", 1)[1]: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def test_archive_holds_the_study_and_nothing_private(packaged):
    tmp, archive = packaged
    files = _members(archive)
    assert set(REQUIRED) <= set(files)
    specs = [f for f in files if f.startswith("specs/")]
    assert len(specs) == 5  # 2 placements x 2 seeds + zero-shot
    assert {"inputs/grammar.txt", "inputs/tiny-gpt2/config.json"} <= set(files)
    forbidden = [str(Path.home()), str(tmp), "/work/", sys.prefix, "pytest-of"]
    user = re.compile(rf"(?<![\w-]){re.escape(getpass.getuser())}(?![\w-])".encode())
    for name, data in files.items():
        for s in forbidden:
            assert s.encode() not in data, (name, s)
        if not name.endswith((".png", ".pdf", ".safetensors")):
            assert not user.search(data), name
    with tarfile.open(archive, "r:gz") as tar:
        for m in tar.getmembers():
            assert (m.uname, m.gname, m.uid, m.gid, m.mtime) == ("", "", 0, 0, 0)
    lock = files["environment.lock"].decode()
    assert re.search(r"^torch==\S+$", lock, re.M) and re.search(r"^peft==\S+$", lock, re.M)
    fps = json.loads(files["fingerprints.json"])
    assert list(fps["model"]) == ["tiny-gpt2"] and list(fps["data"]) == ["grammar.txt"]
    man = json.loads(files["MANIFEST.json"])
    assert len(man["runs"]) == 5 and all(r["status"] == "done" for r in man["runs"].values())


def test_package_is_byte_reproducible(packaged, tmp_path):
    tmp, archive = packaged
    again = tmp_path / archive.name  # same name: REPRODUCE.md names the archive
    assert run_cli(["package", str(tmp / "out"), "--out", str(again)]) == 0
    assert again.read_bytes() == archive.read_bytes()


def test_verify_in_another_directory_retrains_identically(packaged, tmp_path, monkeypatch, capsys):
    _, archive = packaged
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert run_cli(["verify", str(archive), "--runs", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    retrained = [ln for ln in out if ln.startswith("ok   retrain")]
    assert len(retrained) == 2
    for ln in retrained:
        stored, got = re.search(r"stored (\S+), reproduced (\S+):", ln).groups()
        assert stored == got and "identical (tolerance 0;" in ln
    assert any(ln.startswith("ok   report   rebuilt from the store") for ln in out)
    assert out[-1] == "verified: 5 ok, 0 failed"


def _retar(archive: Path, dest: Path, edit) -> Path:
    work = dest / "x"
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(work, filter="data")
    root = next(work.iterdir())
    edit(root)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(root, arcname=root.name)
    out = dest / "tampered.tar.gz"
    out.write_bytes(gzip.compress(buf.getvalue()))
    return out


def test_verify_names_a_changed_metric(packaged, tmp_path, capsys):
    _, archive = packaged
    changed = {}

    def edit(root: Path) -> None:
        con = sqlite3.connect(root / "store" / "loraplace.db")
        rid, value = con.execute(
            "SELECT r.run_id, m.value FROM runs r JOIN metrics m USING (run_id) "
            "WHERE r.placement='seed-ffn' AND r.seed=1 AND m.name='eval_loss'"
        ).fetchone()
        con.execute(
            "UPDATE metrics SET value=? WHERE run_id=? AND name='eval_loss'", (value + 0.01, rid)
        )
        con.commit()
        con.close()
        changed.update(rid=rid, old=value, new=value + 0.01)

    bad = _retar(archive, tmp_path, edit)
    capsys.readouterr()
    assert run_cli(["verify", str(bad), "--runs", "0"]) == 1
    out = capsys.readouterr().out.splitlines()
    expected = (
        f"FAIL store    run {changed['rid']} (seed-ffn, seed 1): eval_loss = "
        f"{changed['new']!r} in the store, {changed['old']!r} when packaged"
    )
    assert expected in out
    assert "FAIL files    store/loraplace.db: sha256 differs from MANIFEST.json" in out
    assert any(ln.startswith("FAIL report   report.md differs from the rebuild") for ln in out)
    assert out[-1].startswith("FAILED:")


def test_verify_names_an_edited_report_file(packaged, tmp_path, capsys):
    _, archive = packaged

    def edit(root: Path) -> None:
        md = root / "report" / "report.md"
        md.write_text(md.read_text().replace("## Results", "## Results (edited)"))

    bad = _retar(archive, tmp_path, edit)
    capsys.readouterr()
    assert run_cli(["verify", str(bad), "--runs", "0"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "FAIL files    report/report.md: sha256 differs from MANIFEST.json" in out
    line = next(ln for ln in out if ln.startswith("FAIL report   report.md"))
    assert "'## Results (edited)'" in line and "'## Results'" in line


def test_verify_rejects_what_is_not_a_package(tmp_path, capsys):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar")
    assert run_cli(["verify", str(junk)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not a readable package" in err[0]
    assert run_cli(["verify", str(tmp_path / "missing.tar.gz")]) == 2


@pytest.mark.parametrize(
    "text, expected",
    [
        ("/home/ana/.venv/bin/loraplace run s.yaml", "loraplace run s.yaml"),
        ('File "/work/main/src/loraplace/x.py", line 3', 'File "x.py", line 3'),
        ("model: /tmp/pytest-of-root/p0/tiny-gpt2", "model: tiny-gpt2"),
        ("see https://github.com/huggingface/peft", "see https://github.com/huggingface/peft"),
        ("openai-community/gpt2 and runs/default", "openai-community/gpt2 and runs/default"),
        ("alpha/r and 1/2", "alpha/r and 1/2"),
    ],
)
def test_scrub_rewrites_absolute_paths_only(text, expected):
    assert scrub(text) == expected


def test_tolerance_depends_on_the_environment():
    base = {
        "device": "cpu",
        "precision": "fp32",
        "machine": "x86_64",
        "torch_threads": 2,
        "packages": {"torch": "2.13.0", "transformers": "5.0", "peft": "0.21"},
    }
    assert tolerance(base, dict(base))[0] == 0.0
    gpu = {**base, "device": "cuda:0", "gpu": "H200"}
    assert 0 < tolerance(gpu, dict(gpu))[0] < OTHER_ENV
    tol, why = tolerance(base, {**base, "precision": "bf16"})
    assert tol == OTHER_ENV and "precision fp32 vs bf16" in why


def test_builtin_weights_are_checked_before_retraining(tmp_path, monkeypatch):
    from run_fixtures import write_tiny_model

    import loraplace.builtin as builtin
    from loraplace.builtin.shipped import weights_fingerprint
    from loraplace.package.retrain import _weights_problem

    model_dir = write_tiny_model(tmp_path / "m")
    monkeypatch.setattr(builtin, "builtin_model_dir", lambda name: model_dir)
    fp = weights_fingerprint(model_dir)
    assert _weights_problem("tiny-markov", {"tiny-markov": fp}) == []
    assert _weights_problem("other", {"tiny-markov": "0" * 64}) == []
    (problem,) = _weights_problem("tiny-markov", {"tiny-markov": "0" * 64})
    assert problem == f"built-in tiny-markov weights {fp[:16]} here, {'0' * 16} packaged"
