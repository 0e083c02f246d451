"""Data loading: sources, packing, splits, the on-disk cache and the user errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from loraplace.data import load_blocks, retain_dataset_for, sources, tokenized
from loraplace.data.packing import pack, split_blocks, tokenizer_hash
from loraplace.errors import UserError

WORDS = "the cat sat on a mat and dog ran far".split()


def word_tokenizer():
    """A whitespace word-level HF tokenizer: one token per word, so counts are exact."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")


@pytest.fixture
def tok():
    return word_tokenizer()


@pytest.fixture(autouse=True)
def cache_env(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LORAPLACE_CACHE", str(cache))
    return cache


# 20 documents of 7 words: 20 * (7 + 1 EOS) = 160 tokens in the stream.
DOCS = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(7)) for i in range(20)]


def write(tmp_path, fmt: str, docs=DOCS, field: str = "text"):
    path = tmp_path / f"data.{fmt}"
    if fmt == "txt":
        path.write_text("\n".join(docs))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)))
    elif fmt == "csv":
        pd.DataFrame({"id": range(len(docs)), field: docs}).to_csv(path, index=False)
    elif fmt == "parquet":
        pd.DataFrame({"id": range(len(docs)), field: docs}).to_parquet(path)
    return path


# --- packing and splitting ------------------------------------------------------------------


def test_pack_puts_eos_after_each_document_and_drops_the_remainder():
    docs = [torch.tensor([1, 2, 3]).numpy(), torch.tensor([4, 5]).numpy()]
    blocks, n_tokens = pack(docs, eos_id=0, block_size=3)
    assert n_tokens == 7  # 1 2 3 <eos> 4 5 <eos>
    assert blocks.tolist() == [[1, 2, 3], [0, 4, 5]]
    assert blocks.dtype == torch.int64


def test_split_is_seeded_disjoint_and_complete():
    blocks = torch.arange(50 * 4).reshape(50, 4)
    train, val = split_blocks(blocks, 0.1, seed=0)
    assert (len(train), len(val)) == (45, 5)
    rows = sorted(r[0] for r in torch.cat([train, val]).tolist())
    assert rows == list(range(0, 200, 4))  # every block exactly once
    again_train, again_val = split_blocks(blocks, 0.1, seed=0)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert not torch.equal(val, split_blocks(blocks, 0.1, seed=1)[1])
    assert val[:, 0].tolist() == sorted(val[:, 0].tolist())  # val keeps source order


@pytest.mark.parametrize(("n", "fraction", "n_val"), [(2, 0.1, 1), (3, 0.9, 2), (100, 0.25, 25)])
def test_split_keeps_at_least_one_block_on_each_side(n, fraction, n_val):
    train, val = split_blocks(torch.zeros(n, 2, dtype=torch.int64), fraction, seed=0)
    assert (len(train), len(val)) == (n - n_val, n_val)


# --- sources --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "n_docs", "n_tokens"),
    [
        ("txt", 1, 20 * 7 + 1),  # one document: the newlines are whitespace to the tokenizer
        ("jsonl", 20, 160),
        ("csv", 20, 160),
        ("parquet", 20, 160),
    ],
)
def test_file_formats(tmp_path, tok, fmt, n_docs, n_tokens):
    blocks = load_blocks(str(write(tmp_path, fmt)), tok, 8)
    assert (blocks.n_docs, blocks.n_tokens) == (n_docs, n_tokens)
    n_blocks = n_tokens // 8
    n_val = round(0.1 * n_blocks)
    assert blocks.train.shape == (n_blocks - n_val, 8)
    assert blocks.val.shape == (n_val, 8)
    assert blocks.floor is None
    assert blocks.info["source"] == "file"


def test_jsonl_stream_is_documents_joined_by_eos(tmp_path, tok):
    path = write(tmp_path, "jsonl", docs=["the cat", "sat on a", "mat"])
    blocks = load_blocks(str(path), tok, 2, val_fraction=0.5, split_seed=3)
    # the cat <eos> sat on a <eos> mat <eos>: 9 tokens, 4 blocks of 2, 1 token dropped
    assert blocks.n_tokens == 9
    got = sorted(torch.cat([blocks.train, blocks.val]).tolist())
    ids = tok.convert_tokens_to_ids
    want = [ids(["the", "cat"]), ids(["<eos>", "sat"]), ids(["on", "a"]), ids(["<eos>", "mat"])]
    assert got == sorted(want)


def test_text_field_names_the_column(tmp_path, tok):
    path = write(tmp_path, "csv", field="body")
    assert load_blocks(str(path), tok, 8, text_field="body").n_docs == 20


def test_n_train_keeps_a_seeded_subset(tmp_path, tok):
    path = str(write(tmp_path, "jsonl"))
    full = load_blocks(path, tok, 4)
    capped = load_blocks(path, tok, 4, n_train=5)
    assert capped.train.shape == (5, 4)
    assert torch.equal(capped.train, full.train[:5])
    assert torch.equal(capped.val, full.val)
    assert capped.fingerprint != full.fingerprint
    assert capped.info["n_train_available"] == len(full.train)


# --- the cache ------------------------------------------------------------------------------


def test_second_load_reads_the_cache_without_tokenising(tmp_path, tok, cache_env, monkeypatch):
    path = str(write(tmp_path, "jsonl"))
    first = load_blocks(path, tok, 8, split_seed=1)
    assert (cache_env / "data" / first.fingerprint / "blocks.safetensors").is_file()

    def fail(*args, **kwargs):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(tokenized, "tokenize_documents", fail)
    second = load_blocks(path, tok, 8, split_seed=1)
    assert torch.equal(first.train, second.train) and torch.equal(first.val, second.val)
    assert second.train.dtype == second.val.dtype == torch.int64
    assert (second.fingerprint, second.n_docs, second.n_tokens) == (
        first.fingerprint,
        first.n_docs,
        first.n_tokens,
    )
    assert second.info == first.info
    # Anything that changes the blocks changes the key, so these must tokenise.
    for kwargs in ({"block_size": 4}, {"split_seed": 2}, {"val_fraction": 0.2}):
        args = {"block_size": 8, "split_seed": 1, **kwargs}
        with pytest.raises(AssertionError, match="tokenised again"):
            load_blocks(path, tok, args.pop("block_size"), **args)


def test_cache_key_follows_content_and_tokenizer(tmp_path, tok):
    path = write(tmp_path, "jsonl")
    before = load_blocks(str(path), tok, 8).fingerprint
    assert load_blocks(str(path), word_tokenizer(), 8).fingerprint == before  # same tokenizer
    path.write_text(path.read_text() + json.dumps({"text": "far far"}) + "\n")
    assert load_blocks(str(path), tok, 8).fingerprint != before
    other = word_tokenizer()
    other.add_tokens(["zebra"])
    assert tokenizer_hash(other) != tokenizer_hash(tok)


# --- user errors ----------------------------------------------------------------------------


def _bad_utf8(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("the caf\xe9 sat".encode("latin-1"))
    return str(path)


def _empty(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("  \n")
    return str(path)


def _short(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("the cat sat")  # 3 tokens + EOS
    return str(path)


def _jsonl_other_field(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"body": "the cat", "id": 1}\n')
    return str(path)


def _csv_other_field(tmp_path):
    return str(write(tmp_path, "csv", field="content"))


def _parquet_other_field(tmp_path):
    return str(write(tmp_path, "parquet", field="content"))


ERRORS = [
    # (make dataset ref, kwargs, expected message fragment)
    (lambda p: str(p / "nope.txt"), {}, "data file not found: .*nope.txt: check the path"),
    (_empty, {}, "is empty: give a file with text"),
    (_short, {"block_size": 4}, r"has 4 tokens, 1 block\(s\) of 4: .*smaller block size"),
    (_bad_utf8, {}, r"is not UTF-8 \(bad byte 0xe9 at offset 7\): re-encode it"),
    (_jsonl_other_field, {}, r"no text field 'text' \(fields: body, id\)"),
    (_csv_other_field, {}, r"no text field 'text' \(fields: id, content\)"),
    (_parquet_other_field, {}, r"no text field 'text' \(fields: id, content\)"),
    (_short, {"block_size": 512, "max_context": 256}, "larger than the model's context of 256"),
    (_short, {"val_fraction": 1.0}, "val_fraction 1.0 must be between 0 and 1"),
    (lambda p: "python-doc", {}, 'unknown dataset .*did you mean "python-docs"'),
    (lambda p: "wikitext", {}, "unknown dataset 'wikitext'.*Hugging Face id owner/name"),
]


@pytest.mark.parametrize(("make", "kwargs", "message"), ERRORS)
def test_user_errors_are_one_line(tmp_path, tok, make, kwargs, message):
    kwargs = {"block_size": 8, **kwargs}
    with pytest.raises(UserError, match=message) as info:
        load_blocks(make(tmp_path), tok, kwargs.pop("block_size"), **kwargs)
    assert "\n" not in str(info.value)


def test_hf_id_offline_says_no_network(tok, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(sources, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(UserError, match=r"^no network: give a local file or a built-in dataset"):
        load_blocks("someone/corpus", tok, 8)


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("owner/name", ("owner/name", None, None)),
        ("hf:wikitext:wikitext-2-raw-v1", ("wikitext", "wikitext-2-raw-v1", None)),
        ("owner/name:cfg@abc123", ("owner/name", "cfg", "abc123")),
    ],
)
def test_parse_hf_id(ref, parsed):
    assert sources.parse_hf_id(ref) == parsed


@pytest.mark.parametrize(
    ("ref", "kind"),
    [("corpus.jsonl", "file"), ("./a/b.txt", "file"), ("owner/name", "hf"), ("hf:imdb", "hf")],
)
def test_reference_kinds(ref, kind):
    assert sources.looks_like_file(ref) == (kind == "file")
    assert sources.looks_like_hf(ref) == (kind == "hf")


# --- built-ins ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "retain"),
    [
        ("python-docs", "python-stdlib"),
        ("python-stdlib", None),
        ("corpus.jsonl", None),
        ("markov-copy", "markov-source"),
        ("markov-source", None),
    ],
)
def test_retain_dataset_for(dataset, retain):
    assert retain_dataset_for(dataset) == retain


def test_markov_names_dispatch_to_the_synthetic_benchmark():
    blocks = load_blocks("markov-transition", None, 32, n_train=4, split_seed=1)
    assert blocks.train.shape == (4, 32)
    assert blocks.floor is not None and blocks.floor > 0
    assert blocks.info["generator"] == "markov"
    with pytest.raises(UserError, match='did you mean "markov-copy"'):
        load_blocks("markov-copi", None, 32)
    with pytest.raises(UserError, match="larger than the model's context of 128"):
        load_blocks("markov-copy", None, 256, max_context=128)


def test_hf_dataset_path_with_a_stand_in_for_the_hub(tok, monkeypatch):
    import datasets

    calls = []

    def fake_load(path, name=None, revision=None, split=None):
        calls.append((path, name, revision, split))
        return datasets.Dataset.from_dict({"text": DOCS, "label": list(range(len(DOCS)))})

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # skips the reachability check
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    blocks = load_blocks("owner/corpus:cfg@v1", tok, 8)
    assert calls == [("owner/corpus", "cfg", "v1", "train")]
    assert (blocks.n_docs, blocks.n_tokens) == (20, 160)
    assert blocks.info["source"] == "hf" and blocks.info["revision"] == "v1"
    with pytest.raises(UserError, match=r"no text field 'body' \(fields: text, label\)"):
        load_blocks("owner/corpus", tok, 8, text_field="body")


# --- loraplace data info --------------------------------------------------------------------


def test_cli_data_info_on_a_file_with_a_local_model_tokenizer(tmp_path, tok, capsys):
    from transformers import GPT2Config

    from loraplace.cli import run_cli

    model_dir = tmp_path / "model"
    tok.save_pretrained(model_dir)
    GPT2Config(vocab_size=len(tok), n_positions=16, n_layer=1).save_pretrained(model_dir)
    path = str(write(tmp_path, "jsonl"))
    argv = ["data", "info", path, "--model", str(model_dir), "--block-size", "8", "--json"]
    assert run_cli(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["documents"] == 20 and summary["tokens"] == 160
    assert (summary["train_blocks"], summary["val_blocks"]) == (18, 2)
    assert summary["floor"] is None
    assert run_cli(["data", "info", path, "--model", str(model_dir), "--block-size", "32"]) == 2
    assert "larger than the model's context of 16" in capsys.readouterr().err


def test_cli_data_info_prints_the_floor_of_a_synthetic_dataset(capsys):
    from loraplace.builtin.markov import markov_blocks
    from loraplace.cli import run_cli

    assert run_cli(["data", "info", "markov-copy", "--block-size", "32"]) == 0
    text = capsys.readouterr().out
    floor = markov_blocks("markov-copy", 32).floor
    assert f"{floor:.4f}" in text and "train blocks" in text and "8,192" in text


def test_cli_data_info_unknown_name_is_one_error_line(capsys):
    from loraplace.cli import run_cli

    assert run_cli(["data", "info", "pyhton-docs"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown dataset 'pyhton-docs' (did you mean \"python-docs\"?)")
    assert err.count("\n") == 1
