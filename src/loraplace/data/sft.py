"""Supervised (instruction) data: tokenising examples and the loss mask, as TRL's SFT does.

- Prompt-completion: the prompt and prompt + completion are tokenised as TRL's
  ``SFTTrainer`` does; the tokens past the prompt's count are the completion, and EOS
  follows it (so the model learns to stop).
- Conversational: the tokenizer's chat template (``apply_chat_template``), or the study's
  ``data.chat_template``. Assistant tokens come from transformers' own
  ``return_assistant_tokens_mask`` when the template marks them with
  ``{% generation %}``; otherwise from the lengths of rendered prefixes: the tokens between
  the conversation up to a reply (with the generation prompt) and through it.
- The mask follows the Hugging Face convention: a label of -100 is not scored. With
  ``loss_on: completion`` (the default) only completion / assistant tokens are scored;
  ``all`` scores every token.
- No packing: each example is one row, right-padded to the longest example, so no example
  attends to another's tokens (causal attention never looks right, at the padding).
- Split by example, seeded; the val examples also serve the task metrics.
"""

from __future__ import annotations

import pathlib
import re
from dataclasses import dataclass, field
from typing import Literal

import torch

from loraplace.data.formats import PROMPT_COMPLETION, Example
from loraplace.errors import UserError

IGNORE = -100  # the Hugging Face label that no loss reads
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")  # transformers' reply marks
PACKING = "none: one example per row, right-padded (no example sees another's tokens)"


@dataclass(frozen=True)
class DataSettings:
    """How instruction data becomes scored tokens (the study's ``data:`` section)."""

    # Our field name -> the column that holds it, e.g. {"prompt": "question"}.
    fields: dict[str, str] = field(default_factory=dict)
    loss_on: Literal["completion", "all"] = "completion"  # which tokens the loss scores
    chat_template: str | None = None  # a Jinja chat template, or a path to a .jinja file
    val_fraction: float = 0.1  # share of examples held out for validation and tasks
    # Raw text: "block" splits packed blocks (as before); "document" splits documents
    # first, so no val block shares a document with a train block.
    split: Literal["block", "document"] = "block"
    # .txt files: None = one document; "blank_line" = separated by blank lines; or a string.
    separator: str | None = None


@dataclass(frozen=True)
class Tokenized:
    """One example's tokens, labels (-100 = not scored) and its generation prompt."""

    ids: list[int]
    labels: list[int]
    prompt_ids: list[int]  # what a generation task starts from
    reference: str  # what a generation task should produce
    choices: tuple[str, ...] = ()


def eos_of(tokenizer) -> int:
    from loraplace.data.packing import eos_id_of

    return eos_id_of(tokenizer)


def tokenize_prompt_completion(tokenizer, ex: Example, loss_on: str) -> Tokenized:
    """TRL's prompt-completion tokenisation: prompt, prompt + completion, then EOS."""
    prompt_ids = tokenizer(ex.prompt)["input_ids"] if ex.prompt else []
    ids = tokenizer(ex.prompt + ex.completion)["input_ids"] + [eos_of(tokenizer)]
    n_prompt = len(prompt_ids)
    labels = list(ids) if loss_on == "all" else [IGNORE] * n_prompt + ids[n_prompt:]
    return Tokenized(ids, labels, list(prompt_ids), ex.completion, ex.choices)


def chat_template_of(tokenizer, template: str | None, model: str = "the model") -> str:
    """The template to render conversations with: the study's, else the tokenizer's."""
    if template:
        path = pathlib.Path(template).expanduser()
        if len(template) < 256 and "{" not in template:
            if not path.is_file():
                raise UserError(f"data.chat_template file {template} not found: check the path")
            return path.read_text(encoding="utf-8")
        return template
    own = getattr(tokenizer, "chat_template", None)
    if not own:
        raise UserError(
            f"the tokenizer of {model} has no chat template, which conversational data needs: "
            "set data.chat_template to a Jinja template or a .jinja file"
        )
    return own


def _render(tokenizer, messages, template: str, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        list(messages),
        chat_template=template,
        tokenize=False,
        add_generation_prompt=generation_prompt,
    )


def _encode(tokenizer, text: str) -> list[int]:
    # The template writes its own special tokens: the tokenizer must not add more.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def assistant_mask(tokenizer, messages, template: str) -> list[int]:
    """1 for every token of an assistant reply, else 0, over the rendered conversation."""
    if _GENERATION_TAG.search(template):
        out = tokenizer.apply_chat_template(
            list(messages),
            chat_template=template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        return list(out["assistant_masks"])
    ids = _encode(tokenizer, _render(tokenizer, messages, template, False))
    mask = [0] * len(ids)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(_encode(tokenizer, _render(tokenizer, messages[:i], template, True)))
        end = len(_encode(tokenizer, _render(tokenizer, messages[: i + 1], template, False)))
        mask[start:end] = [1] * (end - start)
    return mask


def tokenize_messages(tokenizer, ex: Example, loss_on: str, template: str) -> Tokenized:
    """A conversation through the chat template; assistant tokens scored by default."""
    msgs = ex.messages
    ids = _encode(tokenizer, _render(tokenizer, msgs, template, False))
    if loss_on == "all":
        labels = list(ids)
    else:
        mask = assistant_mask(tokenizer, msgs, template)
        labels = [t if m else IGNORE for t, m in zip(ids, mask, strict=True)]
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    prompt_ids = _encode(tokenizer, _render(tokenizer, msgs[:last], template, True))
    return Tokenized(ids, labels, prompt_ids, str(msgs[last]["content"]))


def tokenize_examples(
    examples: list[Example], fmt: str, tokenizer, settings: DataSettings, model: str = "the model"
) -> list[Tokenized]:
    if fmt == PROMPT_COMPLETION:
        return [tokenize_prompt_completion(tokenizer, ex, settings.loss_on) for ex in examples]
    from jinja2 import TemplateError  # transformers' own dependency, for chat templates

    template = chat_template_of(tokenizer, settings.chat_template, model)
    rows = []
    for i, ex in enumerate(examples, start=1):
        try:
            rows.append(tokenize_messages(tokenizer, ex, settings.loss_on, template))
        except (TemplateError, TypeError, ValueError, LookupError) as exc:
            # A user's template (syntax, an unknown filter, raise_exception, a type error)
            # fails here, while the data loads: before any store or training.
            kind = "data.chat_template" if settings.chat_template else f"{model}'s chat template"
            detail = " ".join(str(exc).split())[:160]
            raise UserError(
                f"{kind} fails on conversation {i} ({type(exc).__name__}: {detail}): fix the "
                "template (it renders the messages list; see docs/instruct.md)"
            ) from None
    return rows


def check_lengths(rows: list[Tokenized], block_size: int, source: str) -> int:
    """The row length (longest example); a prompt or example past the block is a UserError."""
    for i, row in enumerate(rows, start=1):
        if len(row.prompt_ids) >= block_size:
            raise UserError(
                f"{source} record {i}: its prompt is {len(row.prompt_ids)} tokens, longer than "
                f"the block of {block_size}: raise train.block_size or shorten the prompt"
            )
        if len(row.ids) > block_size:
            raise UserError(
                f"{source} record {i} is {len(row.ids)} tokens, longer than the block of "
                f"{block_size}: raise train.block_size or shorten the example"
            )
        if not any(t != IGNORE for t in row.labels[1:]):
            raise UserError(f"{source} record {i} has no scored token: give it a completion")
    return max(len(r.ids) for r in rows)


def pad_rows(rows: list[Tokenized], length: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, labels), int64 [n, length]; padding is pad_id with label -100."""
    ids = torch.full((len(rows), length), pad_id, dtype=torch.int64)
    labels = torch.full((len(rows), length), IGNORE, dtype=torch.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r.ids)] = torch.tensor(r.ids)
        labels[i, : len(r.labels)] = torch.tensor(r.labels)
    return ids, labels


def split_examples(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, val) example indices; val keeps source order, at least one each side."""
    if n < 2:
        raise UserError(f"{n} example(s): train and validation need at least one each")
    n_val = min(max(1, round(val_fraction * n)), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return perm[n_val:], sorted(perm[:n_val])


SIDES = ("train", "val", "test")  # the values of a fixed split's ``split`` field


def fixed_split(sides: tuple[str, ...], holdout: str, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) indices of a dataset's own split: train in seeded random order (as
    ``split_examples`` leaves it, so ``n_train`` takes a random subset), the held-out side
    (``holdout``: val or test) in source order."""
    train = [i for i, s in enumerate(sides) if s == "train"]
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    return [train[j] for j in perm], [i for i, s in enumerate(sides) if s == holdout]


def task_examples(rows: list[Tokenized]) -> list[dict]:
    """The plain records a task metric reads (JSON-serialisable, cached with the blocks)."""
    return [
        {"prompt_ids": r.prompt_ids, "reference": r.reference, "choices": list(r.choices)}
        for r in rows
    ]


def sft_blocks(
    name: str,
    examples: list[Example],
    fmt: str,
    tokenizer,
    block_size: int,
    *,
    split_seed: int,
    settings: DataSettings,
    fingerprint: str,
    info: dict,
    model: str = "the model",
    sides: tuple[str, ...] | None = None,
    holdout: str = "val",
):
    """Blocks of instruction examples: one per row, labels masked, split by example.

    sides: each example's side of the dataset's own fixed split (train/val/test), which
        then replaces the seeded split; ``holdout`` picks the side served as val.
    """
    from loraplace.data.blocks import Blocks

    rows = tokenize_examples(examples, fmt, tokenizer, settings, model)
    length = check_lengths(rows, block_size, name)
    if sides is None:
        train_idx, val_idx = split_examples(len(rows), settings.val_fraction, split_seed)
        split: dict = {"split": "example", "val_fraction": settings.val_fraction}
    else:
        train_idx, val_idx = fixed_split(sides, holdout, split_seed)
        split = {"split": "fixed", "holdout": holdout, **{f"n_{s}": sides.count(s) for s in SIDES}}
    ids, labels = pad_rows(rows, length, _pad_id(tokenizer))
    scored = int((labels[:, 1:] != IGNORE).sum())
    lengths = torch.tensor([len(r.ids) for r in rows], dtype=torch.int64)
    return Blocks(
        name=name,
        train=ids[train_idx],
        val=ids[val_idx],
        train_labels=labels[train_idx],
        val_labels=labels[val_idx],
        val_examples=task_examples([rows[i] for i in val_idx]),
        train_examples=task_examples([rows[i] for i in train_idx]),
        train_lengths=lengths[train_idx],
        val_lengths=lengths[val_idx],
        fingerprint=fingerprint,
        n_docs=len(rows),
        n_tokens=sum(len(r.ids) for r in rows),
        info={
            **info,
            "format": fmt,
            "loss_on": settings.loss_on,
            "packing": PACKING,
            "row_length": length,
            "scored_tokens": scored,
            "n_train_examples": len(train_idx),
            "n_val_examples": len(val_idx),
            "block_size": block_size,
            "split_seed": split_seed,
            **split,
        },
    )


def _pad_id(tokenizer) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else eos_of(tokenizer)
