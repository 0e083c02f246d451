"""The natural-text built-in pair: python-stdlib / python-docs and the tiny-python model.

Cheap by design: the tokenizer is trained on a few stdlib files and pretraining runs a few
steps on them; the full model is measured by hand (see pretrain_tiny_python's summary).
"""

from __future__ import annotations

import json
import platform

import pytest
import torch

from loraplace.builtin import pytext
from loraplace.data import load_blocks
from loraplace.data.packing import tokenizer_hash

N_SMALL = 30  # stdlib files the small tokenizer and pretraining smoke test use


@pytest.fixture(autouse=True)
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAPLACE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def small_tok():
    return pytext.train_tokenizer(pytext.documents("python-stdlib")[:N_SMALL], vocab_size=512)


@pytest.fixture
def small_stdlib(monkeypatch):
    """python-stdlib cut down to 12 files (the content hash follows)."""
    subset = pytext._stdlib_documents()[:12]
    monkeypatch.setattr(pytext, "_stdlib_documents", lambda: subset)
    pytext.content_hash.cache_clear()
    yield subset
    pytext.content_hash.cache_clear()


def test_stdlib_sources_exclude_tests_and_are_ordered():
    docs = pytext._stdlib_documents()
    names = [name for name, _ in docs]
    assert len(names) > 500
    assert names == sorted(names)
    assert not [n for n in names if "/test/" in f"/{n}" or n.split("/")[-1].startswith("test_")]
    assert not [n for n in names if "site-packages" in n or "_sysconfigdata" in n]
    assert {"os.py", "json/decoder.py", "asyncio/tasks.py"} <= set(names)


def test_python_docs_are_the_pydoc_topics():
    from pydoc_data.topics import topics

    docs = pytext.documents("python-docs")
    assert len(docs) == len(topics)
    assert docs[0] == topics[sorted(topics)[0]]
    assert any("assert_stmt ::=" in d for d in docs)


@pytest.mark.parametrize("name", ["python-stdlib", "python-docs"])
def test_dataset_info_records_python_version_and_content_hash(name):
    info = pytext.dataset_info(name)
    assert info["python_version"] == platform.python_version()
    assert len(info["content_sha256"]) == 64
    pytext.content_hash.cache_clear()
    assert pytext.content_hash(name) == info["content_sha256"]  # recomputed, same


def test_tokenizer_is_byte_level_deterministic_and_round_trips(small_tok, tmp_path):
    from transformers import AutoTokenizer

    assert small_tok.eos_token_id == 0 and small_tok.convert_ids_to_tokens(0) == pytext.EOS
    assert len(small_tok) == 512
    text = "def f(x):\n    return x ** 2  # ünïcode → fine\n"
    ids = small_tok(text, add_special_tokens=False)["input_ids"]
    assert small_tok.decode(ids) == text  # byte-level: every string survives exactly
    again = pytext.train_tokenizer(pytext.documents("python-stdlib")[:N_SMALL], vocab_size=512)
    assert tokenizer_hash(again) == tokenizer_hash(small_tok)
    small_tok.save_pretrained(tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded(text, add_special_tokens=False)["input_ids"] == ids
    assert tokenizer_hash(loaded) == tokenizer_hash(small_tok)


def test_python_docs_blocks(small_tok):
    blocks = load_blocks("python-docs", small_tok, 128)
    assert blocks.n_docs == len(pytext.documents("python-docs"))
    n_blocks = blocks.n_tokens // 128
    assert len(blocks.train) + len(blocks.val) == n_blocks
    assert len(blocks.val) == round(0.1 * n_blocks)
    assert blocks.info["python_version"] == platform.python_version()
    assert blocks.info["content_hash"] == pytext.content_hash("python-docs")
    # EOS separates the 79-odd topics: one per document in the stream, minus the remainder.
    n_eos = int((torch.cat([blocks.train, blocks.val]) == 0).sum())
    assert blocks.n_docs - 1 <= n_eos <= blocks.n_docs


def test_config_has_gpt2_module_names():
    from transformers import GPT2LMHeadModel

    with torch.device("meta"):
        model = GPT2LMHeadModel(pytext.TINY_PYTHON_CONFIG)
    names = {n for n, _ in model.named_modules()}
    for suffix in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        assert f"transformer.h.3.{suffix}" in names
    assert pytext.TINY_PYTHON_CONFIG.vocab_size == pytext.VOCAB_SIZE


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine two OpenMP threads mostly wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_pretraining_smoke_is_deterministic_and_saves_a_loadable_model(
    small_stdlib, one_thread, tmp_path, monkeypatch
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setattr(pytext, "STEPS", 4)
    monkeypatch.setattr(pytext, "BATCH_SIZE", 2)
    monkeypatch.setattr(pytext, "WARMUP", 2)
    monkeypatch.setattr(pytext, "N_VAL", 4)
    first = pytext.pretrain_tiny_python(tmp_path / "a")
    pytext.build_tiny_python(tmp_path / "b")  # second build: cached tokenizer and blocks

    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b")
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    summary = json.loads((tmp_path / "b" / pytext.INFO_FILE).read_text())
    assert summary["val_loss"] == first["val_loss"]
    assert summary["python_version"] == platform.python_version()
    assert summary["stdlib_sha256"] == pytext.content_hash("python-stdlib")
    assert summary["steps"] == 4 and summary["val_blocks"] == 4
    tok = AutoTokenizer.from_pretrained(tmp_path / "b")
    assert tok.eos_token_id == 0
    x = torch.tensor([tok("import os\n")["input_ids"]])
    assert torch.isfinite(a(input_ids=x).logits).all()
