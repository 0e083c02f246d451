"""Start-up: the CLI imports only the verb that runs, and reading a store never imports
torch (checked in a fresh interpreter, where sys.modules tells the truth)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from report_fixtures import make_store

from loraplace.cli import _COMMAND_MODULES, _VERB_MODULE, _verb

HEAVY = ("torch", "transformers", "peft", "optuna", "ray")
PROBE = """
import json, sys
from loraplace.cli import run_cli
rc = run_cli(sys.argv[1:])
cli = sorted(m.split(".")[-1] for m in sys.modules if m.startswith("loraplace.cli."))
heavy = [m for m in {heavy!r} if m in sys.modules]
print(json.dumps({{"rc": rc, "heavy": heavy, "cli": cli}}))
"""


def _imports_of(*argv: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("startup") / "loraplace.db")


def test_help_imports_every_verb_and_no_torch():
    got = _imports_of("--help")
    assert got["rc"] == 0 and got["heavy"] == []
    assert got["cli"] == sorted(["app", *_COMMAND_MODULES])


def test_status_imports_its_verb_only_and_no_torch(store):
    got = _imports_of("status", str(store))
    assert got == {"rc": 0, "heavy": [], "cli": ["app", "run"]}


@pytest.mark.slow
def test_report_imports_its_verb_only_and_no_torch(store, tmp_path):
    got = _imports_of("report", str(store), "--out", str(tmp_path / "rep"))
    assert got == {"rc": 0, "heavy": [], "cli": ["app", "report"]}
    assert (tmp_path / "rep" / "report.md").is_file()


def _probe_json() -> dict:
    """A stored probe of the fixture model: two scores over every (layer, role) it adapts."""
    from loraplace.probe.result import ProbeResult

    keys = [(layer, role) for layer in (0, 1) for role in ("attn.qkv", "attn.o", "mlp.up")]
    return ProbeResult(
        scores={
            "taylor": {k: 1.0 + i for i, k in enumerate(keys)},
            "nfn": {k: 2.0 - 0.1 * i for i, k in enumerate(keys)},
        },
        modules={k: [f"h.{k[0]}.{k[1]}"] for k in keys},
        weight_params={k: 64 * 64 for k in keys},
        lora_params_per_rank={k: 128 for k in keys},
        meta={"batches": 2, "tokens": 128},
    ).to_json()


def test_report_of_a_probe_and_a_budget_reads_them_without_torch(tmp_path):
    store = make_store(tmp_path / "loraplace.db", budget=4096, probe=_probe_json())
    got = _imports_of("report", str(store), "--out", str(tmp_path / "rep"))
    assert got == {"rc": 0, "heavy": [], "cli": ["app", "report"]}
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "## Probes before training" in text and "## Equal budget" in text


@pytest.mark.parametrize(
    "argv, verb",
    [([], None), (["--help"], None), (["run", "s.yaml"], "run"), (["data", "info", "x"], "data")],
)
def test_the_verb_is_the_first_word_that_is_not_an_option(argv, verb):
    assert _verb(argv) == verb


def test_every_verb_module_is_a_command_module():
    assert set(_VERB_MODULE.values()) <= set(_COMMAND_MODULES)


def test_importing_loraplace_registers_the_builtins_without_numpy_or_torch():
    code = (
        "import sys, loraplace\n"
        "from loraplace.data import builtin_datasets\n"
        "print(len(builtin_datasets()), 'numpy' in sys.modules, 'torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    n, numpy, torch = out.stdout.split()
    assert int(n) >= 7 and (numpy, torch) == ("False", "False")
