"""Dataset formats with TRL's field names, detected from the fields of each record.

- language modelling: ``text``;
- prompt-completion: ``prompt`` / ``completion`` (Alpaca's ``instruction`` / ``input`` /
  ``output`` map onto them: prompt = instruction, then a newline and input when input is
  not empty; completion = output);
- conversational: ``messages``, a list of ``{role, content}``.

Records come from .jsonl/.json/.parquet/.csv files or a Hugging Face dataset. A study's
``data.fields`` renames columns to these names first (``{prompt: question}`` reads the
prompt from the ``question`` column). Every problem is one ``UserError`` line that names
the fields it found.
"""

from __future__ import annotations

import io
import json
import pathlib
from dataclasses import dataclass

from loraplace.errors import UserError

TABULAR_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
TEXT, PROMPT_COMPLETION, CONVERSATIONAL = "text", "prompt-completion", "conversational"
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Example:
    """One instruction example, in either supervised format (text has no Example)."""

    prompt: str = ""  # prompt-completion: the conditioning text
    completion: str = ""  # prompt-completion: what the model should learn to write
    messages: tuple[dict, ...] = ()  # conversational: [{role, content}, ...]
    choices: tuple[str, ...] = ()  # optional options for a ``choice`` task


def read_records(path: pathlib.Path) -> list[dict]:
    """The rows of a .jsonl/.json/.parquet/.csv file as dicts (None values dropped)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except pa.ArrowException as exc:
            raise UserError(f"{path} is not a valid Parquet file ({exc})") from None
    elif suffix == ".csv":
        rows = _csv_rows(path)
    elif suffix == ".json":
        rows = _json_rows(path)
    else:
        rows = _jsonl_rows(path)
    return [{k: v for k, v in row.items() if v is not None} for row in rows]


def _csv_rows(path: pathlib.Path) -> list[dict]:
    import pandas as pd

    try:
        frame = pd.read_csv(io.StringIO(_text(path)), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{path} is not valid CSV ({str(exc).splitlines()[0]})") from None
    return frame.to_dict("records")


def _json_rows(path: pathlib.Path) -> list[dict]:
    try:
        data = json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"train": [...]} or {"data": [...]}
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(f"{path} must hold a JSON list of objects (one per example)")
    return data


def _jsonl_rows(path: pathlib.Path) -> list[dict]:
    return [row for _, row in jsonl_rows(path, _text(path))]


def jsonl_rows(path: pathlib.Path, text: str):
    """(line number, object) of every non-blank line of a JSON Lines text."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} line {lineno} is not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {lineno} is not a JSON object: each line must be one")
        yield lineno, row


def _text(path: pathlib.Path) -> str:
    try:
        return path.read_text(encoding="utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8: re-encode it, e.g. iconv -t utf-8") from None


def remap(row: dict, fields: dict[str, str]) -> dict:
    """The row with columns renamed to TRL's names: fields maps our name -> column."""
    out = dict(row)
    for ours, column in fields.items():
        if column in row:
            out[ours] = out.pop(column)
    return out


def format_of(keys) -> str | None:
    """The format a record's field names point to (None: no known format)."""
    keys = set(keys)
    if "messages" in keys:
        return CONVERSATIONAL
    if keys & {"prompt", "completion", "instruction", "output"}:
        return PROMPT_COMPLETION
    if "text" in keys:
        return TEXT
    return None


def detect_format(rows: list[dict], source: str) -> str | None:
    """The one format of every (remapped) row; mixed formats are a UserError.

    None when the first row has no known field: the raw-text reader then names the
    missing text field and the fields it found.
    """
    if not rows:
        raise UserError(f"{source} holds no records: give a file with at least one example")
    first = format_of(rows[0])
    if first is None:
        return None
    for i, row in enumerate(rows[1:], start=2):
        fmt = format_of(row)
        if fmt != first:
            raise UserError(
                f"{source} mixes formats: record 1 is {first} (fields {_names(rows[0])}), "
                f"record {i} is {fmt or 'unknown'} (fields {_names(row)}): use one format per file"
            )
    return first


def _names(row: dict) -> str:
    return ", ".join(sorted(map(str, row))) or "none"


def to_examples(rows: list[dict], fmt: str, source: str) -> list[Example]:
    """Validated Examples of prompt-completion or conversational rows."""
    make = _prompt_completion if fmt == PROMPT_COMPLETION else _conversation
    return [make(row, i, source) for i, row in enumerate(rows, start=1)]


def _str_field(row: dict, key: str, i: int, source: str) -> str:
    value = row.get(key, "")
    if not isinstance(value, str):
        raise UserError(f"{source} record {i}: {key!r} is a {type(value).__name__}, not text")
    return value


def _prompt_completion(row: dict, i: int, source: str) -> Example:
    if "instruction" in row or "output" in row:  # Alpaca: the documented mapping
        need, prompt = ("instruction", "output"), _alpaca_prompt(row, i, source)
        completion_key = "output"
    else:
        need, completion_key = ("prompt", "completion"), "completion"
        prompt = _str_field(row, "prompt", i, source)
    missing = [k for k in need if k not in row]
    if missing:
        raise UserError(
            f"{source} record {i} has no {missing[0]!r} field (fields {_names(row)}): "
            f"prompt-completion data needs {' and '.join(need)}; or map one with data.fields"
        )
    completion = _str_field(row, completion_key, i, source)
    if not completion.strip():
        raise UserError(
            f"{source} record {i} has an empty {completion_key!r}: "
            "every example needs text to learn; remove or fill it"
        )
    choices = row.get("choices", ())
    if not isinstance(choices, list | tuple) or not all(isinstance(c, str) for c in choices):
        raise UserError(f"{source} record {i}: 'choices' must be a list of strings")
    return Example(prompt=prompt, completion=completion, choices=tuple(choices))


def _alpaca_prompt(row: dict, i: int, source: str) -> str:
    instruction = _str_field(row, "instruction", i, source)
    extra = _str_field(row, "input", i, source)
    return f"{instruction}\n{extra}" if extra.strip() else instruction


def _conversation(row: dict, i: int, source: str) -> Example:
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{source} record {i}: 'messages' must be a non-empty list")
    for m in messages:
        if not isinstance(m, dict) or not {"role", "content"} <= set(m):
            got = _names(m) if isinstance(m, dict) else type(m).__name__
            raise UserError(f"{source} record {i}: each message needs role and content (got {got})")
        if m["role"] not in ROLES:
            raise UserError(
                f"{source} record {i}: unknown role {m['role']!r}: use one of {', '.join(ROLES)}"
            )
        if not isinstance(m["content"], str):  # str(None) is "None": it read as a reply
            got = "null" if m["content"] is None else f"a {type(m['content']).__name__}"
            raise UserError(
                f"{source} record {i}: the {m['role']} message's content is {got}, not text: "
                "give every message its text (or remove the record)"
            )
    answers = [m for m in messages if m["role"] == "assistant"]
    if not answers or not all(m["content"].strip() for m in answers):
        raise UserError(
            f"{source} record {i} has no assistant message or an empty one: "
            "every conversation needs an assistant reply to learn"
        )
    return Example(messages=tuple({"role": m["role"], "content": m["content"]} for m in messages))
