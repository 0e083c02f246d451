"""Text sources: local files and Hugging Face datasets (registered datasets bring their own).

A source is resolved in two steps so that a cache hit costs no parsing: ``resolve_source``
returns the source's identity (a content hash) and a ``read`` function; only a cache miss
calls ``read`` to get the documents. Every problem a user can cause is a one-line
``UserError``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse

from loraplace.data.formats import jsonl_rows, read_records
from loraplace.data.registry import builtin_datasets
from loraplace.errors import UserError

FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet", ".csv")
HF_PREFIX = "hf:"
BLANK_LINE = "blank_line"  # data.separator: .txt documents are separated by blank lines


@dataclass(frozen=True)
class TextSource:
    """A resolved text source: who it is (for the cache key) and how to read it."""

    name: str  # as the user gave it
    kind: str  # "file" | "hf" | "builtin" (a registered dataset)
    content_hash: str  # sha256 of the content (files, built-ins) or the dataset's fingerprint
    read: Callable[[], list[str]] = field(repr=False, compare=False)  # the documents
    info: dict = field(default_factory=dict, compare=False)  # recorded in Blocks.info


def looks_like_file(dataset: str) -> bool:
    """True when the reference names a local file (by suffix or because it exists)."""
    return dataset.lower().endswith(FILE_SUFFIXES) or os.path.isfile(dataset)


def looks_like_hf(dataset: str) -> bool:
    """True for ``hf:name`` and for ``owner/name`` ids that are not local paths."""
    if dataset.startswith(HF_PREFIX):
        return True
    # Hub ids are owner/name; anything with more slashes, or starting with . or /, is a path.
    return dataset.count("/") == 1 and not dataset.startswith((".", "/", "~"))


def resolve_source(
    dataset: str, text_field: str = "text", hf=None, separator: str | None = None
) -> TextSource:
    """Resolve a local file or an HF datasets id to a TextSource.

    hf: ``load_hf(dataset)``'s result when the caller has loaded it already.
    separator: how a .txt file splits into documents (see ``split_txt``).
    """
    if looks_like_file(dataset):
        return file_source(pathlib.Path(dataset).expanduser(), text_field, separator)
    if looks_like_hf(dataset):
        return hf_source(dataset, text_field, hf)
    raise UserError(f"not a file or Hugging Face dataset: {dataset!r}")


# --- local files ------------------------------------------------------------------------


def file_source(
    path: pathlib.Path, text_field: str = "text", separator: str | None = None
) -> TextSource:
    """A local .txt/.jsonl/.parquet/.csv file; ``text_field`` names the column (not .txt),
    ``separator`` how a .txt file splits into documents (None: it is one document)."""
    if not path.exists():
        raise UserError(f"data file not found: {path}: check the path")
    if path.is_dir():
        raise UserError(f"{path} is a directory: give one {'/'.join(FILE_SUFFIXES)} file")
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise UserError(f"unsupported data file {path.name}: use one of {', '.join(FILE_SUFFIXES)}")
    data = path.read_bytes()
    if not data.strip():
        raise UserError(f"data file {path} is empty: give a file with text in it")
    # The text field only matters for tabular formats; it is part of their identity.
    ident = {"format": suffix, "sha256": hashlib.sha256(data).hexdigest()}
    if suffix != ".txt":
        ident["text_field"] = text_field
    elif separator is not None:  # absent by default: older cache keys stay the same
        ident["separator"] = separator
    content_hash = _sha256_json(ident)

    def read() -> list[str]:
        docs = _parse_file(path, data, suffix, text_field, separator)
        if not any(d.strip() for d in docs):
            raise UserError(f"no text in {path}: every {text_field!r} value is empty")
        return docs

    return TextSource(
        name=str(path),
        kind="file",
        content_hash=content_hash,
        read=read,
        info={"source": "file", "path": str(path.resolve()), "file_sha256": ident["sha256"]},
    )


def split_txt(text: str, separator: str | None) -> list[str]:
    """A .txt file's documents. None: the whole file is one (splitting prose or code on its
    own would put EOS tokens in the middle of it); "blank_line": runs of lines separated
    by one or more blank lines; any other string: the text between its occurrences."""
    if separator is None:
        return [text]
    if separator == BLANK_LINE:
        parts = re.split(r"\n[ \t]*\n(?:[ \t]*\n)*", text)
    else:
        parts = text.split(separator)
    return [p.strip("\n") for p in parts if p.strip()]


def _parse_file(
    path: pathlib.Path, data: bytes, suffix: str, text_field: str, separator: str | None = None
) -> list[str]:
    if suffix == ".parquet":
        return _parse_parquet(path, text_field)
    text = _decode_utf8(path, data)
    if suffix == ".txt":
        return split_txt(text, separator)
    if suffix == ".jsonl":
        return _parse_jsonl(path, text, text_field)
    if suffix == ".json":
        return _parse_json(path, text_field)
    return _parse_csv(path, text, text_field)


def _decode_utf8(path: pathlib.Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path} is not UTF-8 (bad byte 0x{data[exc.start]:02x} at offset {exc.start}): "
            "re-encode it, e.g. iconv -f latin1 -t utf-8"
        ) from None
    return text.removeprefix("\ufeff")  # a BOM is not text


def _missing_field(source: pathlib.Path | str, text_field: str, fields) -> UserError:
    """source: a file, or a Hugging Face dataset id."""
    names = ", ".join(str(f) for f in fields) or "none"
    return UserError(
        f"{source} has no text field {text_field!r} (fields: {names}): set text_field to one of "
        "them, or give instruction data (prompt+completion, instruction+output or messages; "
        "data.fields renames columns)"
    )


def _parse_jsonl(path: pathlib.Path, text: str, text_field: str) -> list[str]:
    docs: list[str] = []
    for lineno, row in jsonl_rows(path, text):
        if text_field not in row:
            raise _missing_field(path, text_field, row.keys())
        value = row[text_field]
        if value is not None and not isinstance(value, str):
            raise UserError(
                f"{path} line {lineno}: {text_field!r} is a {type(value).__name__}, not text"
            )
        if value:  # an empty document would only add a lone EOS
            docs.append(value)
    return docs


def _parse_json(path: pathlib.Path, text_field: str) -> list[str]:
    rows = read_records(path)
    if rows and text_field not in rows[0]:
        raise _missing_field(path, text_field, rows[0].keys())
    return [v for r in rows if isinstance(v := r.get(text_field), str) and v]


def _parse_csv(path: pathlib.Path, text: str, text_field: str) -> list[str]:
    import pandas as pd

    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{path} is not valid CSV ({str(exc).splitlines()[0]})") from None
    if text_field not in frame.columns:
        raise _missing_field(path, text_field, frame.columns)
    return [v for v in frame[text_field].tolist() if v]


def _parse_parquet(path: pathlib.Path, text_field: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except pa.ArrowException as exc:
        raise UserError(f"{path} is not a valid Parquet file ({exc})") from None
    if text_field not in schema.names:
        raise _missing_field(path, text_field, schema.names)
    column_type = schema.field(text_field).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise UserError(f"{path}: column {text_field!r} is {column_type}, not text")
    column = pq.read_table(path, columns=[text_field]).column(text_field)
    return [v for v in column.to_pylist() if v]


# --- Hugging Face datasets ----------------------------------------------------------------


def parse_hf_id(dataset: str) -> tuple[str, str | None, str | None]:
    """Split ``[hf:]owner/name[:config][@revision]`` into (path, config, revision)."""
    ref = dataset.removeprefix(HF_PREFIX)
    ref, _, revision = ref.partition("@")
    path, _, config = ref.partition(":")
    if not path:
        raise UserError(f"empty Hugging Face dataset id in {dataset!r}: use hf:owner/name")
    return path, config or None, revision or None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (a cheap check, no request)."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_env() -> bool:
    return any(
        os.environ.get(v, "").upper() in {"1", "ON", "YES", "TRUE"}
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _no_network(dataset: str) -> UserError:
    builtins = ", ".join(builtin_datasets())
    return UserError(
        f"no network: give a local file or a built-in dataset ({builtins}); "
        f"{dataset!r} is not in the local Hugging Face cache"
    )


def load_hf(dataset: str):
    """The "train" split of a Hugging Face dataset, and its content hash."""
    path, config, revision = parse_hf_id(dataset)
    # Without this check, datasets retries for ~25 s before failing when offline.
    if not _offline_env() and not hub_reachable():
        raise _no_network(dataset)
    import datasets

    try:
        ds = datasets.load_dataset(path, config, revision=revision, split="train")
    except ConnectionError:
        raise _no_network(dataset) from None
    except datasets.exceptions.DatasetNotFoundError as exc:
        raise UserError(f"no such Hugging Face dataset {path!r}: {exc}".splitlines()[0]) from None
    except ValueError as exc:  # e.g. an unknown config name
        raise UserError(f"cannot load {dataset!r}: {str(exc).splitlines()[0]}") from None
    # The dataset's own fingerprint is a hash of its prepared Arrow data and config.
    content_hash = _sha256_json(
        {"hf": path, "config": config, "revision": revision, "fingerprint": ds._fingerprint}
    )
    return ds, content_hash


def hf_source(dataset: str, text_field: str = "text", hf=None) -> TextSource:
    """A dataset from the Hugging Face hub (or its local cache), split "train"."""
    path, config, revision = parse_hf_id(dataset)
    ds, content_hash = hf if hf is not None else load_hf(dataset)
    if text_field not in ds.column_names:
        raise _missing_field(dataset, text_field, ds.column_names)

    def read() -> list[str]:
        return [v for v in ds[text_field] if v]

    return TextSource(
        name=dataset,
        kind="hf",
        content_hash=content_hash,
        read=read,
        info={"source": "hf", "hf_id": path, "config": config, "revision": revision},
    )


def _sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
