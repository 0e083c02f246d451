"""The data side of Axolotl / LLaMA-Factory exports: the keys that reproduce the study's
text and loss mask, for each data format, and the exports still load back as planned."""

import json
from pathlib import Path

import pytest
import yaml
from transformers import AutoConfig

from loraplace.arch import describe, meta_from_config
from loraplace.cli import run_cli
from loraplace.data import formats
from loraplace.errors import UserError
from loraplace.placement import resolve
from loraplace.placement.export_data import (
    ALPACA_FORMAT,
    NO_INPUT_FORMAT,
    axolotl_data,
    data_side,
    llama_factory_data,
)
from loraplace.placement.roundtrip import verified_export

CONFIGS = Path(__file__).parent / "configs"
ROWS = {
    "pc.jsonl": [{"prompt": "Q: 2+2=", "completion": " 4"}],
    "alpaca.jsonl": [
        {"instruction": "Add", "input": "2 2", "output": "4"},
        {"instruction": "Say hi", "input": "", "output": "hi"},
    ],
    "chat.jsonl": [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    ],
    "text.jsonl": [{"body": "plain text"}],
}


def _write(tmp_path, name):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS[name]))
    return path


def test_prompt_completion_keys(tmp_path):
    path = _write(tmp_path, "pc.jsonl")
    side = data_side(str(path))
    assert axolotl_data(side) == {
        "datasets": [
            {
                "path": str(path.resolve()),
                "ds_type": "json",
                "type": {
                    "field_instruction": "prompt",
                    "field_output": "completion",
                    "format": "{instruction}",
                    "no_input_format": "{instruction}",
                },
            }
        ],
        "train_on_inputs": False,
    }
    doc, info = llama_factory_data(side)
    assert doc == {
        "stage": "sft",
        "dataset": "pc",
        "dataset_dir": ".",
        "template": "empty",
        "train_on_prompt": False,
    }
    assert info == {
        "pc": {
            "file_name": str(path.resolve()),
            "formatting": "alpaca",
            "columns": {"prompt": "prompt", "response": "completion"},
        }
    }


def test_alpaca_keys_build_loraplaces_prompt(tmp_path):
    path = _write(tmp_path, "alpaca.jsonl")
    side = data_side(str(path), data={"loss_on": "all"})
    entry = axolotl_data(side)["datasets"][0]
    assert entry["type"] == {
        "field_instruction": "instruction",
        "field_input": "input",
        "field_output": "output",
        "format": "{instruction}\n{input}",
        "no_input_format": "{instruction}",
    }
    assert axolotl_data(side)["train_on_inputs"] is True  # loss_on: all
    doc, info = llama_factory_data(side)
    assert doc["train_on_prompt"] is True
    assert info["alpaca"]["columns"] == {
        "prompt": "instruction",
        "query": "input",
        "response": "output",
    }
    # The prompts the trainers build (Axolotl's format / no_input_format; LLaMA-Factory's
    # "\n".join of prompt and a non-empty query) are loraplace's, character for character.
    examples = formats.to_examples(ROWS["alpaca.jsonl"], formats.PROMPT_COMPLETION, "f")
    for row, ex in zip(ROWS["alpaca.jsonl"], examples, strict=True):
        fmt = ALPACA_FORMAT if row["input"] else NO_INPUT_FORMAT
        assert fmt.format(**row) == ex.prompt
        assert "\n".join(x for x in (row["instruction"], row["input"]) if x) == ex.prompt
    assert [ex.prompt for ex in examples] == ["Add\n2 2", "Say hi"]


def test_chat_keys_with_the_study_template(tmp_path):
    path = _write(tmp_path, "chat.jsonl")
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    side = data_side(str(path), data={"chat_template": str(template)})
    doc = axolotl_data(side)
    assert doc["datasets"][0] == {
        "path": str(path.resolve()),
        "ds_type": "json",
        "type": "chat_template",
        "field_messages": "messages",
        "message_property_mappings": {"role": "role", "content": "content"},
        "roles_to_train": ["assistant"],
    }
    assert doc["train_on_inputs"] is False
    assert doc["chat_template"] == "jinja"
    assert doc["chat_template_jinja"] == template.read_text()
    assert axolotl_data(data_side(str(path)))["chat_template"] == "tokenizer_default"
    lf, info = llama_factory_data(side)
    assert "template" not in lf and lf["train_on_prompt"] is False
    assert info["chat"]["formatting"] == "sharegpt"
    assert info["chat"]["columns"] == {"messages": "messages"}
    assert info["chat"]["tags"] == {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "system_tag": "system",
    }


def test_raw_text_and_remapped_fields(tmp_path):
    path = _write(tmp_path, "text.jsonl")
    side = data_side(str(path), text_field="body")
    assert axolotl_data(side)["datasets"][0]["type"] == "completion"
    assert axolotl_data(side)["datasets"][0]["field"] == "body"
    assert "train_on_inputs" not in axolotl_data(side)
    doc, info = llama_factory_data(side)
    assert doc["stage"] == "pt" and info["text"]["columns"] == {"prompt": "body"}
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "a", "answer": "b"}) + "\n")
    side = data_side(str(qa), data={"fields": {"prompt": "question", "completion": "answer"}})
    assert axolotl_data(side)["datasets"][0]["type"]["field_output"] == "answer"
    assert llama_factory_data(side)[1]["qa"]["columns"] == {
        "prompt": "question",
        "response": "answer",
    }


@pytest.mark.parametrize("fmt", ["axolotl", "llama-factory"])
def test_round_trip_with_the_data_side(tmp_path, fmt):
    config = AutoConfig.from_pretrained(CONFIGS / "jamba")
    rp = resolve("all-linear", describe(meta_from_config(config), config), rank=8)
    side = data_side(str(_write(tmp_path, "chat.jsonl")))
    files, _ = verified_export(rp, fmt, config, base_model="jamba", data=side)  # loads back
    doc = yaml.safe_load(next(iter(files.values())))
    if fmt == "axolotl":
        assert list(files) == ["axolotl.yaml"] and doc["datasets"][0]["type"] == "chat_template"
    else:
        assert list(files) == ["llama_factory.yaml", "dataset_info.json"]
        assert doc["dataset"] == "chat" and "chat" in json.loads(files["dataset_info.json"])
    assert files[next(iter(files))].splitlines()[1].startswith("# data: ")


def test_data_side_needs_a_local_file():
    with pytest.raises(UserError, match="needs a local data file"):
        data_side("tiny-markov")


def test_export_cli_writes_dataset_info(tmp_path, capsys):
    path = _write(tmp_path, "pc.jsonl")
    out = tmp_path / "out"
    argv = ["export", str(CONFIGS / "jamba"), "all-linear", "-f", "llama-factory", "-o", str(out)]
    assert run_cli([*argv, "--data", str(path)]) == 0
    assert json.loads((out / "dataset_info.json").read_text())["pc"]["formatting"] == "alpaca"
    assert yaml.safe_load((out / "llama_factory.yaml").read_text())["train_on_prompt"] is False
    capsys.readouterr()
    assert run_cli([*argv, "--data", str(tmp_path / "none.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a local data file" in err[0]


def test_export_cli_reads_the_studys_data_settings(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "2+2=", "answer": " 4"}) + "\n")
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "name": "s",
                "model": "tiny-markov",
                "dataset": str(qa),
                "placements": ["attention"],
                "data": {
                    "fields": {"prompt": "question", "completion": "answer"},
                    "loss_on": "all",
                },
            }
        )
    )
    out = tmp_path / "out"
    argv = ["export", str(CONFIGS / "jamba"), "all-linear", "-f", "axolotl", "-o", str(out)]
    assert run_cli([*argv, "--study", str(study)]) == 0
    doc = yaml.safe_load((out / "axolotl.yaml").read_text())
    assert doc["datasets"][0]["type"]["field_instruction"] == "question"
    assert doc["datasets"][0]["type"]["field_output"] == "answer"
    assert doc["train_on_inputs"] is True
