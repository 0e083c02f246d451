"""Real tasks from data nobody here wrote: facts and words the Python standard library
ships, written into the cache at first use (see docs/real_tasks.md).

- ``real-mime-types`` (knowledge): a file extension -> its MIME type, from the table
  ``mimetypes`` is built with (``MimeTypes()`` reads no system file such as
  /etc/mime.types, so the answer is the same on every machine of one Python release).
- ``real-http-status`` (knowledge): an HTTP status code -> its reason phrase, from
  ``http.HTTPStatus`` (each Python release has its own list, as for MIME types).
- ``real-unicode-names`` (knowledge): a character -> its Unicode name, for the visible
  characters of a few blocks (Latin, Greek, arrows, mathematical operators) in
  ``unicodedata.ucd_3_2_0``: the Unicode 3.2 database every Python 3 carries frozen, and
  names never change once assigned, so the data is the same in every Python release.
- ``real-reverse-words`` (a skill over real words): a word -> the word spelt backwards,
  for the words (4 to 10 letters) of the Unicode 3.2 names of U+0000-U+03FF and
  U+2000-U+27BF (Latin, Greek, punctuation, symbols, arrows, shapes, dingbats).

Each comes in two forms: the name itself is prompt-completion (``prompt`` ends in
``Answer:``, ``completion`` is a space and the answer), and ``<name>-chat`` is the same
question and answer as ``messages`` (one user turn, one assistant turn), rendered by the
model's chat template. Every record carries its side of a fixed split (``split``: train,
val or test): the held-out examples are ranked by a hash of the seed and their key, so
they are the same in every study and for both forms, and do not move when a newer Python
adds entries (an added key only lands where its hash ranks it).
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from loraplace.data.cache import cache_dir
from loraplace.data.registry import RegisteredDataset, register_dataset

VERSION = 1  # bump when the questions, answers or split change
SEED = 20261206  # ranks the examples for the fixed split
CHAT_SUFFIX = "-chat"  # the messages form of a task is registered as <name>-chat
# The Unicode blocks the characters and words come from: (first, last + 1) code points.
UNICODE_BLOCKS = (
    (0x00A0, 0x0250),  # Latin-1 Supplement, Latin Extended-A and -B
    (0x0370, 0x0400),  # Greek and Coptic
    (0x2190, 0x2200),  # Arrows
    (0x2200, 0x2300),  # Mathematical Operators
)
# The blocks whose names give the words: U+0000-U+03FF (Basic Latin to Greek) and
# U+2000-U+27BF (General Punctuation to Dingbats), English words for the most part.
WORD_BLOCKS = ((0x0000, 0x0400), (0x2000, 0x27C0))
_VISIBLE = ("L", "N", "P", "S")  # letters, numbers, punctuation, symbols (no marks, spaces)


@dataclass(frozen=True)
class RealTask:
    """One task: its (key, answer) pairs, the question asked, and its fixed split sizes."""

    name: str
    kind: str  # "knowledge" or "skill"
    source: str  # the standard-library source, for the doc and the dataset's info
    pairs: Callable[[], list[tuple[str, str]]]  # (key, answer), keys distinct
    question: str  # with {key}
    n_test: int
    n_val: int
    max_new_tokens: int  # enough for the longest answer in SmolLM2's tokens, with room

    def eval_task(self) -> dict:
        """The exact-match entry of a study's ``eval.tasks`` for this task."""
        return {
            "name": self.name,
            "kind": "exact_match",
            "max_new_tokens": self.max_new_tokens,
            "stop": ["\n"],
        }


def mime_pairs() -> list[tuple[str, str]]:
    """(extension, MIME type) of mimetypes' own strict table, sorted by extension."""

    # A fresh MimeTypes starts from the module's default table only; the system files
    # that mimetypes.init() reads (/etc/mime.types, ...) are never added to it.
    return sorted(mimetypes.MimeTypes().types_map[True].items())


def http_pairs() -> list[tuple[str, str]]:
    """(status code, reason phrase) of every ``http.HTTPStatus``, by code."""

    return [(str(int(s)), s.phrase) for s in sorted(HTTPStatus)]


def _unicode_chars(blocks=UNICODE_BLOCKS) -> list[tuple[str, str]]:
    """(character, name) of the visible characters of blocks in Unicode 3.2."""

    ucd = unicodedata.ucd_3_2_0
    out = []
    for first, end in blocks:
        for code in range(first, end):
            ch = chr(code)
            name = ucd.name(ch, "")
            if name and ucd.category(ch)[0] in _VISIBLE:
                out.append((ch, name))
    return out


def unicode_pairs() -> list[tuple[str, str]]:
    """(character, Unicode name) of the visible characters of UNICODE_BLOCKS."""
    return [(f"{ch} (U+{ord(ch):04X})", name) for ch, name in _unicode_chars()]


def word_pairs() -> list[tuple[str, str]]:
    """(word, the word reversed) for the distinct 4-10 letter words of WORD_BLOCKS' names."""
    words = {
        w.lower()
        for _, name in _unicode_chars(WORD_BLOCKS)
        for w in name.split()
        if w.isalpha() and 4 <= len(w) <= 10
    }
    return [(w, w[::-1]) for w in sorted(words)]


# name, kind, source, pairs, question, n_test, n_val, max_new_tokens
TASKS = {
    t.name: t
    for t in (
        RealTask("real-mime-types", "knowledge", "mimetypes (MimeTypes().types_map[True])",
                 mime_pairs,
                 "What is the MIME type of the file extension {key}? Answer with the type only.",
                 50, 25, 16),
        RealTask("real-http-status", "knowledge", "http.HTTPStatus (code, phrase)",
                 http_pairs,
                 "What is the reason phrase of the HTTP status code {key}? "
                 "Answer with the phrase only.",
                 20, 10, 12),
        RealTask("real-unicode-names", "knowledge",
                 "unicodedata.ucd_3_2_0 (Unicode 3.2 character names)",
                 unicode_pairs,
                 "What is the Unicode name of the character {key}? Answer with the name only.",
                 200, 100, 24),
        RealTask("real-reverse-words", "skill",
                 "the words of unicodedata.ucd_3_2_0 character names",
                 word_pairs,
                 "Write the word {key} backwards, last letter first. Answer with that word only.",
                 200, 100, 12),
    )
}  # fmt: skip


def task_of(dataset: str) -> RealTask:
    """The task a registered name (either form) belongs to."""
    return TASKS[dataset.removesuffix(CHAT_SUFFIX)]


def sides(task: RealTask, keys: list[str]) -> list[str]:
    """Each key's side of the fixed split: the first n_test keys by hash rank are test,
    the next n_val val, the rest train."""

    def rank(key: str) -> str:
        return hashlib.sha256(f"{SEED}:{task.name}:{key}".encode()).hexdigest()

    order = sorted(range(len(keys)), key=lambda i: rank(keys[i]))
    side = ["train"] * len(keys)
    for i in order[: task.n_test]:
        side[i] = "test"
    for i in order[task.n_test : task.n_test + task.n_val]:
        side[i] = "val"
    return side


def records(dataset: str) -> list[dict]:
    """The dataset's records in source order, each with its ``split``."""
    task = task_of(dataset)
    pairs = task.pairs()
    chat = dataset.endswith(CHAT_SUFFIX)
    out = []
    for (key, answer), side in zip(pairs, sides(task, [k for k, _ in pairs]), strict=True):
        question = task.question.format(key=key)
        if chat:
            turns = [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
            out.append({"messages": turns, "split": side})
        else:
            pc = {"prompt": f"{question}\nAnswer:", "completion": f" {answer}"}
            out.append({**pc, "split": side})
    return out


def dataset_path(dataset: str) -> Path:
    """The dataset's JSONL in the cache, written on first use (atomically); its name
    carries a hash of its content, which moves whenever the standard library's data does."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records(dataset))
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = cache_dir() / "datasets" / f"{dataset}-v{VERSION}-{digest}.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return path


def dataset_names() -> list[str]:
    """Every registered name: each task's prompt-completion form, then its chat form."""
    return [n for t in TASKS for n in (t, t + CHAT_SUFFIX)]


def _register() -> None:
    for name in dataset_names():
        register_dataset(
            RegisteredDataset(
                name=name,
                model="tiny-python",  # a byte-level tokenizer: it reads any text
                file=lambda n: str(dataset_path(n)),
                fixed_split=True,
            )
        )


_register()
