"""The built-in instruction benchmark and the example studies on JSONL files, on the
built-in tiny-markov model (tiny versions: a few steps, one seed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from loraplace.builtin import instruct
from loraplace.builtin.markov import CONTENT_TOKENS
from loraplace.cli import run_cli
from loraplace.data import load_blocks
from loraplace.data.sft import IGNORE
from loraplace.store import Store

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def test_recall_answers_are_the_value_after_the_queried_key():
    rows = instruct.recall_examples(50)
    for r in rows:
        toks = r["prompt"].split()
        assert toks[0] == "<lex>" and toks[-2] == "<copy>" and len(toks) == 11
        keys, values = toks[1:9:2], toks[2:9:2]
        assert len(set(keys)) == 4  # distinct keys: one right answer
        assert r["completion"] == " " + values[keys.index(toks[-1])]


def test_map_is_one_fixed_permutation_of_the_last_token():
    f = instruct.mapping()
    assert sorted(f.tolist()) == list(range(64))
    for r in instruct.map_examples(50):
        x = CONTENT_TOKENS.index(r["prompt"].split()[-1])
        assert r["completion"] == " " + CONTENT_TOKENS[f[x]]


def test_builtin_datasets_are_pinned_and_split_by_example():
    # The file name carries a hash of the generated examples: a change without a
    # version bump fails here.
    names = {n: instruct.dataset_path(n).name for n in instruct.INSTRUCT_DATASETS}
    assert names == {
        "instruct-recall": "instruct-recall-v1-23fca1c2ece0.jsonl",
        "instruct-map": "instruct-map-v1-f60964af20e1.jsonl",
        "instruct-copy": "instruct-copy-v1-0307df93e81a.jsonl",
    }


def test_copy_answers_are_the_token_eight_back():
    for r in instruct.copy_examples(50):
        toks = r["prompt"].split()
        assert toks[0] == "<cpy>" and toks[-1] == "<copy>" and len(toks) == 10
        assert r["completion"] == " " + toks[1]


@pytest.fixture(scope="module")
def tiny_markov():
    from loraplace.models import load_model

    return load_model("tiny-markov")


def test_instruct_map_blocks_on_tiny_markov(tiny_markov):
    _, tok = tiny_markov
    b = load_blocks("instruct-map", tok, 128)
    assert (b.train.shape, b.val.shape) == ((1800, 7), (200, 7))
    assert b.info["split"] == "example" and b.info["row_length"] == 7
    # <trn> n1 n2 n3 x | f(x) <eos>: the answer and EOS are the only scored labels.
    assert (b.train_labels[:, :5] == IGNORE).all()
    assert (b.train_labels[:, 5:] == b.train[:, 5:]).all()
    assert (b.train[:, 6] == tok.eos_token_id).all()


def test_tiny_markov_chat_template_masks_the_replies(tiny_markov):
    _, tok = tiny_markov
    template = (ROOT / "examples/data/tiny_markov_chat.jinja").read_text()
    rows = [json.loads(x) for x in (ROOT / "examples/data/map_chat.jsonl").read_text().splitlines()]
    from loraplace.data.formats import Example
    from loraplace.data.sft import tokenize_messages

    t = tokenize_messages(tok, Example(messages=tuple(rows[0]["messages"])), "completion", template)
    assert tok.decode(t.ids) == "<src> t46 t62 t34 t56 <copy> t45 <eos>"
    assert t.labels == [IGNORE] * 6 + [tok.convert_tokens_to_ids("t45"), tok.eos_token_id]
    assert tok.decode(t.prompt_ids) == "<src> t46 t62 t34 t56 <copy>"
    # Without the generation marks, the prefix method gives the same mask.
    plain = template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    again = tokenize_messages(
        tok, Example(messages=tuple(rows[0]["messages"])), "completion", plain
    )
    assert again.labels == t.labels


@pytest.mark.parametrize("example", ["instruct_pc.yaml", "instruct_chat.yaml"])
def test_example_studies_run_tiny_and_report_accuracy(tmp_path, monkeypatch, capsys, example):
    monkeypatch.chdir(ROOT)  # the examples name their data relative to the repository
    config = yaml.safe_load((ROOT / "examples" / example).read_text())
    config.update(placements=["mlp"], seeds=[0], out=str(tmp_path / "out"))
    config["train"].update(steps=3, warmup_steps=1)
    path = tmp_path / example
    path.write_text(yaml.safe_dump(config))
    assert run_cli(["run", str(path)]) == 0
    with Store(tmp_path / "out", create=False, writer=False) as store:
        runs = store.runs(store.study()["study_id"])
        metrics = store.metrics()
    assert [r["status"] for r in runs] == ["done", "done"]
    for r in runs:  # 60 val examples: each scores its answer and EOS
        m = metrics[r["run_id"]]
        assert m["eval_tokens"] == 60 * 2
        assert m["task:answer"] == m["accuracy"] and m["accuracy"] * 60 == round(m["accuracy"] * 60)
    capsys.readouterr()
    assert run_cli(["report", str(tmp_path / "out"), "--metric", "accuracy"]) == 0
    report = (tmp_path / "out" / "report" / "report.md").read_text()
    assert report.index("## Task accuracy") < report.index("## Results")


def test_data_info_on_a_builtin_instruction_dataset(capsys):
    assert run_cli(["data", "info", "instruct-map", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    # 2,000 examples of 7 tokens; each scores its answer and EOS; 10 % held out.
    assert (info["documents"], info["tokens"], info["scored_tokens"]) == (2000, 14000, 4000)
    assert (info["train_blocks"], info["val_blocks"], info["block_size"]) == (1800, 200, 7)
    assert (info["tokenizer_of"], info["format"]) == ("tiny-markov", "prompt-completion")
