"""Instruction data: formats by their fields, the loss mask token by token, bad data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from run_fixtures import tiny_study, write_tiny_model

from loraplace.cli import run_cli
from loraplace.data import load_blocks
from loraplace.data.formats import detect_format, read_records, remap, to_examples
from loraplace.data.sft import IGNORE, DataSettings, assistant_mask, tokenize_messages
from loraplace.errors import UserError

# Role markers are plain words of the test vocabulary; EOS closes each reply.
TEMPLATE_GEN = (
    "{% for m in messages %}{% if m.role == 'user' %}{{ m.content }} "
    "{% else %}{% generation %}{{ m.content }} {{ eos_token }}{% endgeneration %} "
    "{% endif %}{% endfor %}"
)
TEMPLATE = TEMPLATE_GEN.replace("{% generation %}", "").replace("{% endgeneration %}", "")
CHAT = [
    {"role": "user", "content": "the cat sees"},
    {"role": "assistant", "content": "the moon ."},
    {"role": "user", "content": "a dog eats"},
    {"role": "assistant", "content": "a bone ."},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("m") / "tiny-gpt2")


@pytest.fixture(scope="module")
def tok(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(autouse=True)
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAPLACE_CACHE", str(tmp_path / "cache"))


def write_rows(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        import pandas as pd

        frame = pd.DataFrame(rows)
        frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path)
    return path


PC = [{"prompt": "the cat sees", "completion": " the moon ."}] * 3


@pytest.mark.parametrize(
    "rows, fields, fmt",
    [
        ([{"text": "the cat"}], {}, "text"),
        (PC, {}, "prompt-completion"),
        ([{"instruction": "the cat", "input": "", "output": "a bone"}], {}, "prompt-completion"),
        ([{"messages": CHAT}], {}, "conversational"),
        (
            [{"question": "the cat", "answer": "a bone"}],
            {"prompt": "question", "completion": "answer"},
            "prompt-completion",
        ),
        ([{"body": "the cat"}], {}, None),  # unknown: the text path names the missing field
    ],
)
def test_format_is_detected_from_the_fields(rows, fields, fmt):
    assert detect_format([remap(r, fields) for r in rows], "x") == fmt


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_every_file_type_reads_the_same_records(tmp_path, suffix):
    rows = [
        {"prompt": "the cat sees", "completion": " the moon ."},
        {"prompt": "a", "completion": "b"},
    ]
    assert read_records(write_rows(tmp_path / f"d{suffix}", rows)) == rows


def test_alpaca_maps_instruction_and_input_onto_the_prompt():
    rows = [
        {"instruction": "sort", "input": "b a", "output": "a b"},
        {"instruction": "say hi", "input": "", "output": "hi"},
    ]
    ex = to_examples(rows, "prompt-completion", "x")
    assert [(e.prompt, e.completion) for e in ex] == [("sort\nb a", "a b"), ("say hi", "hi")]


def test_prompt_completion_mask_token_by_token(tmp_path, tok):
    rows = [{"prompt": "the cat sees", "completion": " the moon ."}] * 4 + [
        {"prompt": "a dog", "completion": " eats ."}
    ]
    path = write_rows(tmp_path / "pc.jsonl", rows)
    b = load_blocks(str(path), tok, 16, data=DataSettings(val_fraction=0.2))
    v = tok.get_vocab()
    ids = [v[w] for w in "the cat sees the moon .".split()] + [tok.eos_token_id]
    # The val example is the short one: its row is right-padded with EOS, label -100.
    assert b.info["n_val_examples"] == 1 and b.info["row_length"] == 7
    row = [i for i, r in enumerate(b.train.tolist()) if r == ids][0]
    assert b.train_labels[row].tolist() == [IGNORE] * 3 + ids[3:]
    short = [v["a"], v["dog"], v["eats"], v["."], tok.eos_token_id]
    assert b.val.tolist() == [short + [tok.eos_token_id] * 2]
    assert b.val_labels.tolist() == [[IGNORE, IGNORE, v["eats"], v["."], 0, IGNORE, IGNORE]]
    assert b.val_examples == [{"prompt_ids": short[:2], "reference": " eats .", "choices": []}]
    everything = load_blocks(str(path), tok, 16, data=DataSettings(loss_on="all", val_fraction=0.2))
    assert everything.train_labels[row].tolist() == ids


def test_assistant_mask_by_prefixes_matches_transformers_generation_mask(tok):
    ours = assistant_mask(tok, CHAT, TEMPLATE)
    theirs = assistant_mask(tok, CHAT, TEMPLATE_GEN)  # return_assistant_tokens_mask
    # the cat sees | the moon . <eos> | a dog eats | a bone . <eos>
    assert ours == theirs == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1]
    from loraplace.data.formats import Example

    t = tokenize_messages(tok, Example(messages=tuple(CHAT)), "completion", TEMPLATE)
    assert [x for x, m in zip(t.ids, ours, strict=True) if m] == [
        x for x in t.labels if x != IGNORE
    ]
    assert tok.decode(t.prompt_ids) == "the cat sees the moon . <eos> a dog eats"
    assert t.reference == "a bone ."


def test_eval_loss_is_token_weighted_over_scored_tokens_like_transformers(tmp_path, tok, model_dir):
    from transformers import AutoModelForCausalLM

    from loraplace.train.evaluate import evaluate

    rows = [
        {"prompt": "the cat sees", "completion": " the moon ."},
        {"prompt": "a", "completion": " dog ."},
    ] * 3
    b = load_blocks(
        str(write_rows(tmp_path / "pc.jsonl", rows)), tok, 16, data=DataSettings(val_fraction=0.5)
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ours = evaluate(model, b.val, batch_size=2, scored=b.scored("val"))
    with torch.no_grad():  # transformers' own loss: mean over labels != -100, all rows at once
        theirs = model(input_ids=b.val, labels=b.val_labels).loss.item()
    assert ours.tokens == int((b.val_labels[:, 1:] != IGNORE).sum())
    assert ours.loss == pytest.approx(theirs, rel=1e-5)


# --- bad data: one line, exit 2, through the CLI -------------------------------------------


def _bad(rows):
    return lambda tmp: write_rows(tmp / "bad.jsonl", rows)


BAD = [
    (_bad([{"prompt": "the cat"}] * 3), {}, "record 1 has no 'completion' field (fields prompt)"),
    (
        _bad([{"prompt": "the", "completion": "cat"}, {"text": "a dog"}]),
        {},
        "mixes formats: record 1 is prompt-completion (fields completion, prompt), "
        "record 2 is text (fields text)",
    ),
    (
        _bad([{"prompt": "the cat", "completion": " "}] * 3),
        {},
        "record 1 has an empty 'completion'",
    ),
    (
        _bad([{"messages": CHAT}] * 3),
        {},
        "has no chat template, which conversational data needs: set data.chat_template",
    ),
    (
        _bad([{"prompt": "the cat " * 10, "completion": " a"}] * 3),
        {},
        "record 1: its prompt is 20 tokens, longer than the block of 16",
    ),
    (
        _bad([{"question": "the", "answer": "cat"}] * 3),
        {"data": {"fields": {"prompt": "question"}}},
        "record 1 has no 'completion' field (fields answer, prompt)",
    ),
    (
        _bad([{"messages": [{"role": "user", "content": "a"}]}] * 3),
        {"data": {"chat_template": TEMPLATE}},
        "has no assistant message",
    ),
    (
        lambda tmp: write_rows(tmp / "bad.jsonl", PC * 4),
        {"data": {"fields": {"answer": "x"}}},
        "unknown field 'answer'",
    ),
]


@pytest.mark.parametrize(("make", "extra", "message"), BAD)
def test_bad_instruction_data_is_one_line_and_exit_2(tmp_path, capsys, make, extra, message):
    config = tiny_study(tmp_path, dataset=str(make(tmp_path)), **extra)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert run_cli(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err, err
    assert "\n" not in err
    assert not (tmp_path / "out").exists()


def test_tasks_on_raw_text_are_a_user_error(tmp_path, capsys):
    config = tiny_study(tmp_path)
    config["eval"]["tasks"] = [{"name": "answer"}]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    assert run_cli(["run", str(path)]) == 2
    assert "eval.tasks need instruction data" in capsys.readouterr().err


def test_hf_dataset_records_are_read_like_a_file(tmp_path, tok, monkeypatch):
    import datasets

    from loraplace.data import sources

    path = write_rows(tmp_path / "pc.jsonl", PC * 4)
    local = datasets.load_dataset("json", data_files=str(path), split="train")
    monkeypatch.setattr(sources, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: local)
    b = load_blocks("someone/pc", tok, 16)
    assert b.info["format"] == "prompt-completion" and b.info["n_val_examples"] == 1
    assert b.train_labels[0, :3].tolist() == [IGNORE] * 3


def test_user_error_names_the_found_fields_for_unknown_formats(tmp_path, tok):
    path = write_rows(tmp_path / "x.jsonl", [{"body": "the cat", "id": 1}])
    with pytest.raises(UserError, match=r"no text field 'text' \(fields: body, id\)"):
        load_blocks(str(path), tok, 8)


def test_eval_dataset_is_the_whole_validation_set(tmp_path):
    train = write_rows(tmp_path / "train.jsonl", PC * 8)
    held = [{"prompt": "a dog eats", "completion": " a bone ."}] * 5
    config = tiny_study(
        tmp_path,
        dataset=str(train),
        placements=["seed-ffn"],
        seeds=[0],
        eval={"every": 0, "dataset": str(write_rows(tmp_path / "held.jsonl", held))},
    )
    config["train"].update(steps=2)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    assert run_cli(["run", str(path)]) == 0
    from loraplace.store import Store

    with Store(tmp_path / "out", create=False, writer=False) as store:
        runs = store.runs(store.study()["study_id"])
        metrics = store.metrics()
    for r in runs:  # all 5 held-out examples, each scoring "a bone ." and EOS
        assert metrics[r["run_id"]]["eval_tokens"] == 5 * 4
        assert r["spec"]["eval_dataset"].endswith("held.jsonl")
        assert "eval" in r["spec"]["fingerprints"]


# --- raw text: documents in .txt files, split by document -----------------------------------


@pytest.mark.parametrize(
    "separator, docs",
    [
        (None, ["a b\n\nc d\n \n\ne f\n"]),
        ("blank_line", ["a b", "c d", "e f"]),
        ("<doc>", ["a b\n\nc d\n \n\ne f"]),  # outer newlines are not text
    ],
)
def test_txt_documents_by_separator(separator, docs):
    from loraplace.data.sources import split_txt

    assert split_txt("a b\n\nc d\n \n\ne f\n", separator) == docs
    assert split_txt("x<doc>y<doc>", "<doc>") == ["x", "y"]


def test_split_by_document_keeps_every_val_block_inside_val_documents(tmp_path, tok):
    from run_fixtures import OBJECTS, SUBJECTS

    from loraplace.data.packing import pack, tokenize_documents
    from loraplace.data.sft import split_examples

    docs = [" ".join([f"{s} sees {o} ."] * 3) for s in SUBJECTS for o in OBJECTS[:2]]
    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join(docs) + "\n")
    settings = DataSettings(split="document", separator="blank_line", val_fraction=0.25)
    b = load_blocks(str(path), tok, 8, split_seed=1, data=settings)
    train_idx, val_idx = split_examples(12, 0.25, 1)
    assert (b.n_docs, b.info["split"], b.info["n_val_docs"]) == (12, "document", 3)
    ids = tokenize_documents(docs, tok)
    val, _ = pack([ids[i] for i in val_idx], tok.eos_token_id, 8)
    train, _ = pack([ids[i] for i in train_idx], tok.eos_token_id, 8)
    assert torch.equal(b.val, val)
    assert sorted(map(tuple, b.train.tolist())) == sorted(map(tuple, train.tolist()))
    blocks = load_blocks(str(path), tok, 8, split_seed=1, data=DataSettings(separator="blank_line"))
    assert blocks.fingerprint != b.fingerprint and blocks.n_docs == 12


def test_split_by_document_of_one_document_is_one_line(tmp_path, capsys):
    config = tiny_study(tmp_path, data={"split": "document"})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    assert run_cli(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is one document: a split by document needs at least two" in err and "\n" not in err


def test_a_retain_set_of_instruction_data_is_scored_on_its_completions(tmp_path, tok):
    from transformers import AutoModelForCausalLM

    from loraplace.store import Store
    from loraplace.train.evaluate import evaluate

    retain = write_rows(
        tmp_path / "retain.jsonl", [{"prompt": "a dog", "completion": " eats ."}] * 10
    )
    config = tiny_study(
        tmp_path,
        dataset=str(write_rows(tmp_path / "train.jsonl", PC * 8)),
        retain=str(retain),
        placements=["seed-ffn"],
        seeds=[0],
    )
    config["train"].update(steps=2)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    assert run_cli(["run", str(path)]) == 0
    with Store(tmp_path / "out", create=False, writer=False) as store:
        runs = store.runs(store.study()["study_id"])
        metrics = store.metrics()
    zero = metrics[runs[0]["run_id"]]
    # By hand: the base model on the retain file's val example, its completion scored.
    b = load_blocks(str(retain), tok, 16)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny-gpt2").eval()
    expected = evaluate(model, b.val, scored=b.scored("val"))
    assert expected.tokens == 3  # "eats", "." and EOS
    assert zero["retain_loss"] == pytest.approx(expected.loss, rel=1e-5)
    assert "retain_loss" in metrics[runs[1]["run_id"]]
