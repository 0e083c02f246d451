"""The data side of an Axolotl or LLaMA-Factory export: how the trainer reads the study's data.

A placement trained on other text, or with another loss mask, is not the placement that was
measured. So the export names the study's data file with the dataset keys that make each
trainer build the same text and score the same tokens loraplace did (completion or
assistant tokens only by default, ``data.loss_on: all`` scores everything).

Key names, checked against the trainers' own docs and code (via the search tool):
- Axolotl: ``datasets: [{path, ds_type, type}]``; a user-defined ``type`` with
  ``field_instruction`` / ``field_input`` / ``field_output`` / ``format`` /
  ``no_input_format`` (axolotl README "How to add custom prompts"; its AlpacaPrompter
  appends the output right after the formatted prompt); ``type: completion`` with
  ``field`` for raw text; ``type: chat_template`` with ``field_messages``,
  ``message_property_mappings`` and ``roles_to_train`` (axolotl
  tests/prompt_strategies/test_chat_templates.py); top-level ``train_on_inputs`` and
  ``chat_template: tokenizer_default | jinja`` with ``chat_template_jinja``.
- LLaMA-Factory: dataset_info.json entries with ``file_name``, ``formatting: alpaca |
  sharegpt``, ``columns`` (prompt / query / response / messages) and sharegpt ``tags``
  (role_tag, content_tag, user_tag, assistant_tag, system_tag) (data/README.md); the
  training YAML's ``dataset`` / ``dataset_dir`` / ``template`` / ``train_on_prompt``
  (hparams/data_args.py). With no ``template``, LLaMA-Factory parses the tokenizer's
  own chat template (data/template.py, get_template_and_fix_tokenizer).
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

from loraplace.data import formats
from loraplace.errors import UserError

TEXT, PROMPT_COMPLETION, ALPACA, CONVERSATIONAL = "text", "prompt-completion", "alpaca", "chat"
_DS_TYPE = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
# loraplace's Alpaca mapping (data/formats.py): instruction, newline, input when not empty;
# LLaMA-Factory joins prompt and query with "\n" the same way.
ALPACA_FORMAT, NO_INPUT_FORMAT = "{instruction}\n{input}", "{instruction}"


@dataclass(frozen=True)
class DataSide:
    """A study's data as a trainer must read it to reproduce the study's text and mask."""

    path: str  # the data file (absolute)
    format: str  # TEXT | PROMPT_COMPLETION | ALPACA | CONVERSATIONAL
    columns: dict[str, str] = field(default_factory=dict)  # our field name -> file column
    loss_on: str = "completion"  # "completion" (default) or "all"
    chat_template: str | None = None  # the study's Jinja template; None = the tokenizer's

    def column(self, name: str) -> str:
        return self.columns.get(name, name)

    @property
    def name(self) -> str:
        """The dataset's name in LLaMA-Factory's dataset_info.json."""
        return pathlib.Path(self.path).stem


def data_side(dataset: str, *, text_field: str = "text", data: dict | None = None) -> DataSide:
    """The DataSide of a local data file, its format detected as the study detects it."""

    data = data or {}
    path = pathlib.Path(dataset).expanduser()
    if not path.is_file():
        raise UserError(
            f"the data side of an export needs a local data file, and {dataset!r} is not one: "
            "export without --data, or give the .jsonl/.json/.parquet/.csv file"
        )
    fields = {"text": text_field, **data.get("fields", {})}
    columns = {k: v for k, v in fields.items() if k != v}
    template = _template_text(data.get("chat_template"))
    side = dict(columns=columns, loss_on=data.get("loss_on", "completion"), chat_template=template)
    if path.suffix.lower() not in formats.TABULAR_SUFFIXES:  # .txt: one raw-text corpus
        return DataSide(str(path.resolve()), TEXT, **side)
    rows = [formats.remap(r, fields) for r in formats.read_records(path)]
    fmt = formats.detect_format(rows, str(path)) or TEXT
    if fmt == formats.PROMPT_COMPLETION and ("instruction" in rows[0] or "output" in rows[0]):
        fmt = ALPACA
    fmt = {formats.CONVERSATIONAL: CONVERSATIONAL}.get(fmt, fmt)
    return DataSide(str(path.resolve()), fmt, **side)


def local_data_side(
    dataset: str | None, *, text_field: str = "text", data: dict | None = None
) -> DataSide | None:
    """The DataSide of a local data file; None for a built-in or hub dataset (no file)."""
    if not dataset:
        return None
    from loraplace.data.tokenized import dataset_kind

    if dataset_kind(dataset) != "file":
        return None
    return data_side(dataset, text_field=text_field, data=data)


def _template_text(template: str | None) -> str | None:
    """data.chat_template as Jinja text (the study may name a .jinja file)."""
    if template and len(template) < 256 and "{" not in template:
        path = pathlib.Path(template).expanduser()
        if not path.is_file():
            raise UserError(f"data.chat_template file {template} not found: check the path")
        return path.read_text()
    return template


def axolotl_data(side: DataSide) -> dict:
    """Axolotl's top-level data keys for ``side`` (merged into axolotl.yaml)."""
    path = pathlib.Path(side.path)
    entry: dict = {"path": side.path, "ds_type": _DS_TYPE.get(path.suffix.lower(), "text")}
    doc: dict = {"datasets": [entry], "train_on_inputs": side.loss_on == "all"}
    if side.format == TEXT:  # every token is scored, as in loraplace's raw-text runs
        entry.update(type="completion", field=side.column("text"))
        del doc["train_on_inputs"]
    elif side.format == PROMPT_COMPLETION:  # the prompt verbatim, then the completion
        entry["type"] = {
            "field_instruction": side.column("prompt"),
            "field_output": side.column("completion"),
            "format": NO_INPUT_FORMAT,
            "no_input_format": NO_INPUT_FORMAT,
        }
    elif side.format == ALPACA:  # not type: alpaca, whose "### Instruction:" header
        entry["type"] = {  # loraplace never trained with
            "field_instruction": side.column("instruction"),
            "field_input": side.column("input"),
            "field_output": side.column("output"),
            "format": ALPACA_FORMAT,
            "no_input_format": NO_INPUT_FORMAT,
        }
    else:
        entry.update(
            type="chat_template",
            field_messages=side.column("messages"),
            message_property_mappings={"role": "role", "content": "content"},
            roles_to_train=["assistant"],
        )
        if side.chat_template is None:
            doc["chat_template"] = "tokenizer_default"
        else:
            doc.update(chat_template="jinja", chat_template_jinja=side.chat_template)
    return doc


def llama_factory_data(side: DataSide) -> tuple[dict, dict]:
    """(LLaMA-Factory training-YAML keys, its dataset_info.json) for ``side``."""
    info: dict = {"file_name": side.path}
    doc: dict = {"stage": "sft", "dataset": side.name, "dataset_dir": "."}
    if side.format == TEXT:  # pre-training stage: every token scored
        doc["stage"] = "pt"
        info["columns"] = {"prompt": side.column("text")}
    elif side.format in (PROMPT_COMPLETION, ALPACA):
        info["formatting"] = "alpaca"
        if side.format == ALPACA:
            info["columns"] = {
                "prompt": side.column("instruction"),
                "query": side.column("input"),
                "response": side.column("output"),
            }
        else:
            info["columns"] = {
                "prompt": side.column("prompt"),
                "response": side.column("completion"),
            }
        doc["template"] = "empty"  # the prompt as written, no chat markup
    else:
        info["formatting"] = "sharegpt"
        info["columns"] = {"messages": side.column("messages")}
        info["tags"] = {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        }
        # no template key: LLaMA-Factory then parses the tokenizer's own chat template
    if side.format != TEXT:
        doc["train_on_prompt"] = side.loss_on == "all"
    return doc, {side.name: info}


def data_notes(side: DataSide, fmt: str) -> list[str]:
    """What the export cannot carry, said in the file's header."""
    if fmt == "llama-factory" and side.format == CONVERSATIONAL and side.chat_template:
        return [
            "the study's data.chat_template is not the tokenizer's: LLaMA-Factory reads "
            "only named templates or the tokenizer's, so set the tokenizer's chat_template "
            "to the study's before training"
        ]
    return []


__all__ = [
    "DataSide",
    "axolotl_data",
    "data_notes",
    "data_side",
    "llama_factory_data",
    "local_data_side",
]
