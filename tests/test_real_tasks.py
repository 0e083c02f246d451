"""The real tasks from the standard library's data: sizes, the fixed split, both forms'
loss masks token by token, and a tiny study that scores exact match on one of them."""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from pathlib import Path

import pytest

from loraplace.builtin import real_tasks as rt
from loraplace.data import RegisteredDataset, builtin_datasets, load_blocks
from loraplace.data.sft import IGNORE, SIDES

# (train, val, test) of each task. The Unicode tasks read the frozen Unicode 3.2 database,
# the same in every Python; the MIME table and the HTTP statuses are each release's own
# (pinned for 3.11 here).
SIZES = {
    "real-unicode-names": (585, 100, 200),
    "real-reverse-words": (370, 100, 200),
}
RELEASE_SIZES = {(3, 11): {"real-mime-types": (74, 25, 50), "real-http-status": (32, 10, 20)}}
# The first 12 hex digits of each file's sha256 (its cache name): the data, pinned.
DIGESTS = {
    "real-unicode-names": "e405811fc405",
    "real-unicode-names-chat": "6bf032acafb6",
    "real-reverse-words": "62831be23a1c",
    "real-reverse-words-chat": "dd3ea475390e",
}
RELEASE_DIGESTS = {
    (3, 11): {
        "real-mime-types": "b4a9efc1b3cf",
        "real-mime-types-chat": "d355ab219558",
        "real-http-status": "c49365cbf80c",
        "real-http-status-chat": "0128b1cc3b80",
    }
}
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_tokenizer():
    """A byte-level tokenizer without merges: one token per UTF-8 byte, EOS id 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<eos>": 0, **{c: i + 1 for i, c in enumerate(alphabet)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    out = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")
    out.chat_template = CHATML
    return out


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def _sizes(name: str) -> tuple[int, int, int]:
    if name in SIZES:
        return SIZES[name]
    if sys.version_info[:2] not in RELEASE_SIZES:
        pytest.skip(f"{name} on Python {sys.version_info[:2]} not pinned: add its sizes")
    return RELEASE_SIZES[sys.version_info[:2]][name]


@pytest.mark.parametrize("name", rt.dataset_names())
def test_each_form_has_its_pinned_split_sizes(name):
    counts = Counter(r["split"] for r in rt.records(name))
    assert (counts["train"], counts["val"], counts["test"]) == _sizes(name.removesuffix("-chat"))


def test_every_form_is_registered_with_a_fixed_split():
    names = [n for n in builtin_datasets() if n.startswith("real-")]
    assert names == [
        "real-mime-types",
        "real-mime-types-chat",
        "real-http-status",
        "real-http-status-chat",
        "real-unicode-names",
        "real-unicode-names-chat",
        "real-reverse-words",
        "real-reverse-words-chat",
    ]
    from loraplace.data import registered_dataset

    assert all(registered_dataset(n).fixed_split for n in names)


@pytest.mark.parametrize("name", rt.dataset_names())
def test_the_data_is_pinned_by_its_content_hash(name):
    digests = {**DIGESTS, **RELEASE_DIGESTS.get(sys.version_info[:2], {})}
    if name not in digests:
        pytest.skip(f"{name} on Python {sys.version_info[:2]} not pinned: add its digests")
    path = rt.dataset_path(name)
    assert path.name == f"{name}-v1-{digests[name]}.jsonl"
    assert hashlib.sha256(path.read_bytes()).hexdigest()[:12] == digests[name]


@pytest.mark.parametrize("task", list(rt.TASKS))
def test_the_split_is_disjoint_deterministic_and_shared_by_both_forms(task):
    pc, chat = rt.records(task), rt.records(task + "-chat")
    assert pc == rt.records(task)  # built again: the same records
    assert [r["split"] for r in pc] == [r["split"] for r in chat]
    keys = {side: [r["prompt"] for r in pc if r["split"] == side] for side in SIDES}
    assert sum(map(len, keys.values())) == len({r["prompt"] for r in pc}) == len(pc)


def test_the_first_test_examples_are_pinned():
    def first(task: str, n: int = 3) -> list[str]:
        return [r["completion"] for r in rt.records(task) if r["split"] == "test"][:n]

    assert first("real-unicode-names") == [" YEN SIGN", " BROKEN BAR", " REGISTERED SIGN"]
    assert first("real-reverse-words") == [" tnecca", " etuca", " desserdda"]
    if sys.version_info[:2] == (3, 11):
        assert first("real-http-status") == [" Processing", " Early Hints", " No Content"]
    assert rt.records("real-reverse-words")[0] == {
        "prompt": "Write the word above backwards, last letter first. "
        "Answer with that word only.\nAnswer:",
        "completion": " evoba",
        "split": "train",
    }


def test_mime_types_read_no_system_file(tmp_path, monkeypatch):
    """A machine's /etc/mime.types (here one that adds a type and overrides .pdf) reaches
    mimetypes' module tables, never the table the task is built from."""
    import mimetypes

    before = rt.mime_pairs()
    system = tmp_path / "mime.types"
    system.write_text("application/x-loraplace-test lptest\ntext/x-not-pdf pdf\n")
    monkeypatch.setattr(mimetypes, "knownfiles", [str(system)])
    monkeypatch.setattr(mimetypes, "inited", False)  # the next use reads knownfiles again
    monkeypatch.setattr(mimetypes, "_db", None)
    assert mimetypes.guess_type("x.lptest")[0] == "application/x-loraplace-test"
    assert rt.mime_pairs() == before
    assert (".pdf", "application/pdf") in before and (".json", "application/json") in before


def test_load_blocks_serves_the_fixed_split_whatever_the_seed(tok):
    """The split belongs to the data: seed and val_fraction do not move it; test is held
    out of train even without a test split, and is what holdout=test serves."""
    from loraplace.data.sft import DataSettings

    name = "real-mime-types"
    recs = rt.records(name)
    want = {s: sorted(r["completion"] for r in recs if r["split"] == s) for s in SIDES}
    for seed, frac in ((0, 0.1), (7, 0.5)):
        b = load_blocks(name, tok, 128, split_seed=seed, data=DataSettings(val_fraction=frac))
        assert sorted(e["reference"] for e in b.val_examples) == want["val"]
        assert sorted(e["reference"] for e in b.train_examples) == want["train"]
        assert b.info["split"] == "fixed" and b.info["n_test"] == len(want["test"])
    t = load_blocks(name, tok, 128, test_fraction=0.1, holdout="test")
    assert sorted(e["reference"] for e in t.val_examples) == want["test"]
    assert sorted(e["reference"] for e in t.train_examples) == want["train"]
    assert t.fingerprint != b.fingerprint


def _scored_tokens(tok, ids, labels) -> list[str]:
    return tok.convert_ids_to_tokens(
        [i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE]
    )


def test_prompt_completion_mask_token_by_token(tok):
    b = load_blocks("real-mime-types", tok, 128)
    i = next(i for i, e in enumerate(b.train_examples) if e["reference"] == " application/json")
    ids, labels = b.train[i].tolist(), b.train_labels[i].tolist()
    prompt = (
        "What is the MIME type of the file extension .json? Answer with the type only.\nAnswer:"
    )
    n_prompt = len(prompt.encode())
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    # Scored: the answer's bytes (Ġ is the byte-level space) and EOS; then padding.
    assert _scored_tokens(tok, ids, labels) == [*"Ġapplication/json", "<eos>"]
    assert tok.decode(b.train_examples[i]["prompt_ids"]) == prompt


def test_messages_mask_token_by_token(tok):
    b = load_blocks("real-mime-types-chat", tok, 192)
    i = next(i for i, e in enumerate(b.train_examples) if e["reference"] == "application/json")
    ids, labels = b.train[i].tolist(), b.train_labels[i].tolist()
    # The reply and its end marker are scored; the user turn and the generation prompt not.
    assert "".join(_scored_tokens(tok, ids, labels)) == "application/json<|im_end|>Ċ"
    prompt = tok.decode(b.train_examples[i]["prompt_ids"])
    assert prompt == (
        "<|im_start|>user\nWhat is the MIME type of the file extension .json? "
        "Answer with the type only.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_eval_task_is_an_exact_match_entry_a_study_accepts():
    from loraplace.study.schema import TaskMetricConfig

    task = rt.TASKS["real-reverse-words"].eval_task()
    assert TaskMetricConfig(**task).model_dump()["kind"] == "exact_match"
    assert task == {
        "name": "real-reverse-words",
        "kind": "exact_match",
        "max_new_tokens": 12,
        "stop": ["\n"],
    }


def test_a_fixed_split_needs_file_records():
    from loraplace.data.sources import TextSource

    def source(_):
        return TextSource("x", "h", lambda: [])

    with pytest.raises(ValueError, match="fixed_split needs file records"):
        RegisteredDataset(name="x", model="tiny-python", source=source, fixed_split=True)


def _write_byte_model(root: Path) -> Path:
    """A random tiny GPT-2 over the byte tokenizer (context 192: the longest chat example)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = byte_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=len(tok), n_positions=192,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(root)
    tok.save_pretrained(root)
    return root


@pytest.mark.slow
def test_a_tiny_study_on_a_real_task_reports_exact_match(tmp_path, capsys):
    from run_fixtures import run_study, tiny_study

    from loraplace.cli import run_cli

    task = rt.TASKS["real-mime-types"]
    config = tiny_study(
        tmp_path,
        model=str(_write_byte_model(tmp_path / "byte-gpt2")),
        dataset=task.name,
        placements=["seed-ffn"],
        seeds=[0],
    )
    config["train"].update(steps=3, block_size=160, test_fraction=0.1)
    config["eval"]["tasks"] = [{**task.eval_task(), "max_new_tokens": 4}]
    runs, metrics = run_study(tmp_path, config)
    assert [(r["placement"], r["status"]) for r in runs] == [
        ("zero-shot", "done"),
        ("seed-ffn", "done"),
    ]
    recs = rt.records(task.name)
    # Scored: each answer's bytes (with its leading space) and EOS, on the fixed val / test.
    scored = {
        s: sum(len(r["completion"].encode()) + 1 for r in recs if r["split"] == s) for s in SIDES
    }
    assert (scored["val"], scored["test"]) == (460, 938)
    for r in runs:
        m = metrics[r["run_id"]]
        # A random byte model writes no MIME type in 4 bytes: both splits score 0.
        assert m["task:real-mime-types"] == 0.0 and m["test_task:real-mime-types"] == 0.0
        assert m["eval_tokens"] == 460
    capsys.readouterr()
    assert run_cli(["report", str(tmp_path / "out"), "--metric", "accuracy"]) == 0
    report = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "Task accuracy" in report and "real-mime-types" in report
    assert "examples are split by the dataset's own fixed split" in report
