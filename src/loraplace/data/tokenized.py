"""The one entry point from a dataset reference to train/val token blocks.

A reference is a registered name (``data.registry``: the built-ins register there), a
local ``.txt``/``.jsonl``/``.parquet``/``.csv`` file, or a Hugging Face
datasets id (``owner/name[:config][@revision]``, or ``hf:name``). Natural text is
tokenised, packed and split once, then served from the on-disk cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from typing import Literal

from loraplace.data import cache, formats
from loraplace.data.blocks import Blocks
from loraplace.data.packing import (
    eos_id_of,
    pack,
    split_blocks,
    tokenize_documents,
    tokenizer_hash,
)
from loraplace.data.registry import builtin_datasets, registered_dataset
from loraplace.data.sft import (
    SIDES,
    DataSettings,
    chat_template_of,
    sft_blocks,
    split_examples,
)
from loraplace.data.sources import (
    FILE_SUFFIXES,
    TextSource,
    file_source,
    load_hf,
    looks_like_file,
    looks_like_hf,
    resolve_source,
)
from loraplace.errors import UserError, closest


def _check_args(block_size: int, val_fraction: float, max_context: int | None, n_train) -> None:
    if block_size < 2:
        raise UserError(f"block size {block_size} is too small: use at least 2 tokens")
    if max_context is not None and block_size > max_context:
        raise UserError(
            f"block size {block_size} is larger than the model's context of {max_context} "
            f"tokens: use a block size of at most {max_context}"
        )
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction {val_fraction} must be between 0 and 1 (exclusive)")
    if n_train is not None and n_train < 1:
        raise UserError(f"n_train {n_train} must be at least 1")


def dataset_kind(dataset: str) -> str:
    """ "builtin" (registered), "file" or "hf"; an unknown name is a UserError."""
    if registered_dataset(dataset) is not None:
        return "builtin"
    if looks_like_file(dataset):
        return "file"
    if looks_like_hf(dataset):
        return "hf"
    names = builtin_datasets()
    raise UserError(
        f"unknown dataset {dataset!r}{closest(dataset, names)}: give a built-in "
        f"({', '.join(names)}), a local {'/'.join(FILE_SUFFIXES)} file "
        "or a Hugging Face id owner/name (hf:name)"
    )


def _source_of(dataset: str, text_field: str, hf=None, separator=None) -> TextSource:
    registered = registered_dataset(dataset)
    if registered is not None and registered.source is not None:
        return registered.source(dataset)
    dataset_kind(dataset)  # raises for an unknown name
    return resolve_source(dataset, text_field, hf, separator)


def load_blocks(
    dataset: str,
    tokenizer,
    block_size: int,
    *,
    split_seed: int = 0,
    text_field: str = "text",
    val_fraction: float = 0.1,
    max_context: int | None = None,
    n_train: int | None = None,
    test_fraction: float = 0.0,
    holdout: Literal["val", "test"] = "val",
    data: DataSettings | None = None,
    model: str = "the model",
) -> Blocks:
    """Train/val blocks of ``dataset`` tokenised with ``tokenizer``, cached on disk.

    split_seed: seeds the train/val split (pre-tokenised data: the generator's data seed).
    text_field: the field/column holding the text in .jsonl/.parquet/.csv and HF datasets.
    val_fraction: share of blocks held out for validation (natural text; at least one).
    max_context: the model's context length; a larger block_size is an error.
    n_train: keep at most this many train blocks (a seeded random subset).
    test_fraction: share of blocks held out as a test split, out of the train blocks
        (natural text); 0 = no test split. Synthetic data draws its test blocks from an
        independent stream, the size of val.
    holdout: "test" returns the test split in place of ``val`` (with the same train), so
        every consumer of val blocks (evaluation, floor, masks) serves the test split too.
    data: how instruction data (prompt-completion, messages) is read, masked and split;
        its val_fraction replaces val_fraction for it. Raw text ignores all but fields.
    model: the model's name, for error messages.
    """
    _check_args(block_size, val_fraction, max_context, n_train)
    if holdout == "test" and not test_fraction > 0:
        raise ValueError("holdout='test' needs a test_fraction above 0")
    registered = registered_dataset(dataset)
    if registered is not None and registered.blocks is not None:
        extra = {} if n_train is None else {"n_train": n_train}
        # Its ids are its model's vocabulary already; no tokenizer is involved.
        return registered.blocks(
            dataset, block_size, data_seed=split_seed, holdout=holdout, **extra
        )

    if data is not None:  # the study's data settings hold the val share
        val_fraction = data.val_fraction
    data = data or DataSettings()
    text_field = data.fields.get("text", text_field)
    # A registered instruction dataset is a file it writes, read like the user's own.
    path = registered.file(dataset) if registered is not None and registered.file else None
    fixed = registered is not None and registered.fixed_split
    supervised, hf = _supervised(path or dataset, text_field, data, fixed)
    if supervised is not None:
        blocks = _sft(dataset, supervised, tokenizer, block_size, split_seed, data, model, holdout)
        if supervised.sides is None:  # a fixed split holds its own test records
            blocks = _carve_test(blocks, test_fraction, holdout)
        return _cap_train(blocks, n_train)
    source = _source_of(dataset, text_field, hf, data.separator)
    if tokenizer is None:
        raise ValueError(f"{dataset!r} is text: load_blocks needs the model's tokenizer")
    by_doc = data.split == "document"
    key = cache.cache_key(
        source.content_hash,
        tokenizer_hash(tokenizer),
        block_size,
        split_seed,
        val_fraction,
        {"split": "document"} if by_doc else None,  # blocks: the key as before
    )
    built = cache.load_cached(key, dataset)
    if built is None:
        built = _build(
            dataset, source, tokenizer, block_size, split_seed, val_fraction, key, by_doc
        )
        cache.store(built)
    return _cap_train(_carve_test(built, test_fraction, holdout), n_train)


def _build(
    name: str,
    source: TextSource,
    tokenizer,
    block_size: int,
    split_seed: int,
    val_fraction: float,
    key: str,
    by_document: bool = False,
) -> Blocks:
    documents = source.read()
    token_docs = tokenize_documents(documents, tokenizer)
    info = {
        **source.info,
        "content_hash": source.content_hash,
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "tokenizer": getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__,
        "block_size": block_size,
        "split_seed": split_seed,
        "val_fraction": val_fraction,
    }
    if by_document:
        train, val, n_tokens, n_val_docs = _split_documents(
            source.name, token_docs, tokenizer, block_size, split_seed, val_fraction
        )
        info.update(split="document", n_val_docs=n_val_docs)
    else:
        blocks, n_tokens = pack(token_docs, eos_id_of(tokenizer), block_size)
        n_blocks = int(blocks.shape[0])
        if n_blocks < 2:
            raise UserError(
                f"{source.name} has {n_tokens} tokens, {n_blocks} block(s) of {block_size}: "
                "train and validation need at least one block each; "
                "use a smaller block size or more text"
            )
        train, val = split_blocks(blocks, val_fraction, split_seed)
        info["dropped_tokens"] = n_tokens - n_blocks * block_size
    return Blocks(
        name=name,
        train=train,
        val=val,
        fingerprint=key,
        n_docs=len(documents),
        n_tokens=n_tokens,
        info=info,
    )


def _split_documents(name: str, token_docs, tokenizer, block_size, seed, val_fraction):
    """(train, val, n_tokens, n_val_docs): the documents split (seeded) first, then each
    side packed, so no val block shares a document with a train block."""
    import torch

    if len(token_docs) < 2:
        raise UserError(
            f"{name} is one document: a split by document needs at least two; "
            "separate them (data.separator: blank_line, or your own) or use data.split: block"
        )
    train_idx, val_idx = split_examples(len(token_docs), val_fraction, seed)
    eos = eos_id_of(tokenizer)
    train, n_train_tokens = pack([token_docs[i] for i in train_idx], eos, block_size)
    val, n_val_tokens = pack([token_docs[i] for i in val_idx], eos, block_size)
    if not (len(train) and len(val)):
        raise UserError(
            f"{name}: {len(val_idx)} val document(s) make {len(val)} block(s) of "
            f"{block_size} and the rest {len(train)}: use a smaller block size, more text or "
            "a larger data.val_fraction"
        )
    # Train rows in seeded random order, as the block split leaves them (n_train, test).
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train[perm].clone(), val, n_train_tokens + n_val_tokens, len(val_idx)


def _carve_test(blocks: Blocks, test_fraction: float, holdout: str) -> Blocks:
    """Hold out the last ``test_fraction`` of the (seeded, shuffled) train blocks as test.

    Train rows are in seeded random order, so their tail is a random subset disjoint from
    val; train without it is the same for both holdouts.
    """
    if not test_fraction > 0:
        return blocks
    n = int(blocks.train.shape[0])
    n_test = max(1, round(test_fraction * (n + int(blocks.val.shape[0]))))
    if n_test >= n:  # once clamped to leave one block: a run then trained on one example
        raise UserError(
            f"{blocks.name} has {n} train block(s): a test split of {n_test} "
            f"(test_fraction {test_fraction:g}) leaves none to train on; use a smaller "
            "test_fraction, a smaller block size, more text or test_fraction: 0"
        )
    key = f"{blocks.fingerprint}:test_fraction={test_fraction}:{holdout}"
    labels, examples = blocks.train_labels, blocks.train_examples
    lengths = blocks.train_lengths
    test = holdout == "test"
    return dataclasses.replace(
        blocks,
        train=blocks.train[: n - n_test].clone(),
        val=blocks.train[n - n_test :].clone() if test else blocks.val,
        fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16],
        info={**blocks.info, "test_fraction": test_fraction, "n_test": n_test, "holdout": holdout},
        # Instruction data: labels and task examples follow their rows.
        train_labels=None if labels is None else labels[: n - n_test].clone(),
        val_labels=labels[n - n_test :].clone()
        if test and labels is not None
        else blocks.val_labels,
        train_examples=None if examples is None else examples[: n - n_test],
        val_examples=examples[n - n_test :]
        if test and examples is not None
        else blocks.val_examples,
        train_lengths=None if lengths is None else lengths[: n - n_test].clone(),
        val_lengths=lengths[n - n_test :].clone()
        if test and lengths is not None
        else blocks.val_lengths,
    )


@dataclasses.dataclass(frozen=True)
class _Supervised:
    """Instruction records of a file or HF dataset, identified by content."""

    examples: list[formats.Example]
    fmt: str
    content_hash: str
    info: dict
    sides: tuple[str, ...] | None = None  # each record's side of a fixed split


def _supervised(dataset: str, text_field: str, data: DataSettings, fixed: bool = False):
    """(the dataset's instruction examples, or None when it is raw text or a built-in;
    the loaded HF dataset, so that the text path need not load it again).

    fixed: the records carry their side of the dataset's own split in ``split``.
    """
    hf = None
    if dataset_kind(dataset) == "file":
        path = pathlib.Path(dataset).expanduser()
        if path.suffix.lower() not in formats.TABULAR_SUFFIXES:
            return None, None
        source = file_source(path, text_field)  # checks the path; hashes the bytes
        rows, content_hash, info = formats.read_records(path), source.content_hash, source.info
    elif dataset_kind(dataset) == "hf":
        hf = load_hf(dataset)
        (ds, content_hash), info = hf, {"source": "hf", "hf_id": dataset}
        # Column names first: a raw-text corpus is not turned into Python rows.
        if formats.format_of(formats.remap(dict.fromkeys(ds.column_names), data.fields)) in (
            None,
            formats.TEXT,
        ):
            return None, hf
        rows = ds.to_list()
    else:
        return None, None
    rows = [formats.remap(r, {"text": text_field, **data.fields}) for r in rows]
    fmt = formats.detect_format(rows, str(dataset))
    if fmt in (None, formats.TEXT):
        return None, hf  # raw text: the text path reads it (and names a missing field)
    examples = formats.to_examples(rows, fmt, str(dataset))
    sides = tuple(str(r.get("split")) for r in rows) if fixed else None
    if sides is not None and not set(sides) <= set(SIDES):
        raise ValueError(f"{dataset}: a fixed split's records need split: one of {SIDES}")
    return _Supervised(examples, fmt, content_hash, info, sides), hf


def _sft(
    name: str,
    sup: _Supervised,
    tokenizer,
    block_size: int,
    split_seed: int,
    data: DataSettings,
    model: str,
    holdout: str = "val",
) -> Blocks:
    if tokenizer is None:
        raise ValueError(f"{name!r} is instruction data: load_blocks needs the model's tokenizer")
    template = None
    if sup.fmt == formats.CONVERSATIONAL:
        template = chat_template_of(tokenizer, data.chat_template, model)
    extra = {
        "format": sup.fmt,
        "fields": data.fields,
        "loss_on": data.loss_on,
        "chat_template": hashlib.sha256(template.encode()).hexdigest() if template else None,
    }
    if sup.sides is not None:  # the dataset's own split: which side is served as val
        extra["fixed_split"] = holdout
    key = cache.cache_key(
        sup.content_hash,
        tokenizer_hash(tokenizer),
        block_size,
        split_seed,
        data.val_fraction,
        extra,
    )
    blocks = cache.load_cached(key, name)
    if blocks is None:
        blocks = sft_blocks(
            name,
            sup.examples,
            sup.fmt,
            tokenizer,
            block_size,
            split_seed=split_seed,
            settings=dataclasses.replace(data, chat_template=template),
            fingerprint=key,
            info={
                **sup.info,
                "content_hash": sup.content_hash,
                "tokenizer_hash": tokenizer_hash(tokenizer),
            },
            model=model,
            sides=sup.sides,
            holdout=holdout,
        )
        cache.store(blocks)
    return blocks


def with_eval_dataset(blocks: Blocks, held: Blocks) -> Blocks:
    """``blocks`` with every row of ``held`` (a separate file) as its validation set."""
    import torch

    def both(a, b):
        return None if a is None or b is None else torch.cat([a, b])

    key = f"{blocks.fingerprint}:eval_dataset={held.fingerprint}"
    return dataclasses.replace(
        blocks,
        val=torch.cat([held.train, held.val]),
        val_labels=both(held.train_labels, held.val_labels),
        val_lengths=both(held.train_lengths, held.val_lengths),
        val_examples=(held.train_examples or []) + (held.val_examples or [])
        if held.val_examples is not None
        else None,
        val_oracle_nll=None,  # a floor belongs to the blocks it was computed on
        fingerprint=hashlib.sha256(key.encode()).hexdigest(),
        info={**blocks.info, "eval_dataset": held.name, "eval_dataset_info": held.info},
    )


def _capped_fingerprint(key: str, n_train: int | None) -> str:
    # Any n_train is part of the identity, so the fingerprint is known before building.
    if n_train is None:
        return key
    return hashlib.sha256(f"{key}:n_train={n_train}".encode()).hexdigest()


def _cap_train(blocks: Blocks, n_train: int | None) -> Blocks:
    if n_train is None:
        return blocks
    n_available = int(blocks.train.shape[0])
    # Train rows are in seeded random order, so the first n_train are a random subset.
    labels, examples = blocks.train_labels, blocks.train_examples
    return dataclasses.replace(
        blocks,
        train=blocks.train[:n_train].clone(),
        train_labels=None if labels is None else labels[:n_train].clone(),
        train_examples=None if examples is None else examples[:n_train],
        train_lengths=None if blocks.train_lengths is None else blocks.train_lengths[:n_train],
        fingerprint=_capped_fingerprint(blocks.fingerprint, n_train),
        info={**blocks.info, "n_train_available": n_available},
    )


def dataset_fingerprint(
    dataset: str,
    tokenizer,
    block_size: int,
    *,
    split_seed: int = 0,
    text_field: str = "text",
    val_fraction: float = 0.1,
    n_train: int | None = None,
) -> str:
    """The fingerprint ``load_blocks`` gives, without tokenising (natural text).

    Pre-tokenised data is generated (cheap) to read its fingerprint.
    """
    registered = registered_dataset(dataset)
    if registered is not None and registered.pretokenized:
        blocks = load_blocks(dataset, None, block_size, split_seed=split_seed, n_train=n_train)
        return blocks.fingerprint
    source = _source_of(dataset, text_field)
    key = cache.cache_key(
        source.content_hash, tokenizer_hash(tokenizer), block_size, split_seed, val_fraction
    )
    return _capped_fingerprint(key, n_train)


def retain_dataset_for(dataset: str) -> str | None:
    """The base-model distribution to measure forgetting on after adapting to ``dataset``."""
    registered = registered_dataset(dataset)
    return None if registered is None else registered.retain
