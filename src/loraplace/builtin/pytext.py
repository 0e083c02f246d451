"""The natural-text built-in pair: tiny-python, pretrained on the Python standard library.

- ``python-stdlib``: the ``.py`` sources of the running interpreter's standard library,
  one document per file, sorted by path; tests, ``site-packages`` and machine-specific
  files (``_sysconfigdata*``, ``config-*``) excluded. The base model's pretraining data.
- ``python-docs``: the English text CPython ships in ``pydoc_data.topics`` (the
  language reference topics ``help()`` shows), one document per topic, sorted by name.
  The adaptation target: prose, where the base model knows code.
- ``tiny-python``: a byte-level BPE tokenizer trained here on python-stdlib, and a small
  GPT-2 (GPT-2 module names) pretrained on the python-stdlib train split at first use.

Both texts vary between Python releases, so every artefact records the Python version
and a content hash, and the model's cache directory name carries both.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
import platform
import shutil
import sysconfig
import tempfile
import time
from typing import TYPE_CHECKING

from loraplace.builtin.registry import BuiltinModel, register_builtin_model
from loraplace.data.cache import cache_dir
from loraplace.data.registry import RegisteredDataset, register_dataset
from loraplace.data.sources import TextSource
from loraplace.errors import UserError
from loraplace.schedule import scheduled_lr

VERSION = "v1"  # bump when the tokenizer, model or pretraining recipe changes
INFO_FILE = "loraplace_builtin.json"
EOS = "<|endoftext|>"
# BPE merges + 256 byte symbols + EOS. The LM head dominates step time at this model size:
# 4096 cost 1.4x the step time of 2048 (single-thread CPU, batch 32x128).
VOCAB_SIZE = 2048
SEED = 0
BLOCK_SIZE = 128  # tokens per pretraining sequence
N_POSITIONS = 256  # context, so studies may use blocks up to 256 tokens
BATCH_SIZE = 32  # sequences per step
STEPS = 600  # optimizer steps: 2.5M tokens, ~0.6 of a pass over the python-stdlib train split
LR = 3e-3  # peak AdamW learning rate
WARMUP = 40  # linear warm-up steps
MIN_LR_FRAC = 0.1  # cosine decays to this share of LR
GRAD_CLIP = 1.0
N_VAL = 256  # held-out python-stdlib blocks for the reported figure

# Directory names under the stdlib root that are not library source.
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


def _tiny_python_config():
    from loraplace.builtin.pretrain import tiny_gpt2_config

    # EOS is the first special token, id 0. No pad id: blocks are packed, never padded,
    # and a pad id equal to EOS makes transformers warn about a missing attention mask on
    # every block with an EOS.
    return tiny_gpt2_config(vocab_size=VOCAB_SIZE, n_positions=N_POSITIONS, bos=0, eos=0, pad=None)


def __getattr__(name: str):
    # TINY_PYTHON_CONFIG is built on first access: importing transformers costs seconds,
    # and this module is imported whenever the built-in models are listed.
    if name == "TINY_PYTHON_CONFIG":
        return _tiny_python_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    import torch
    from transformers import GPT2Config

    TINY_PYTHON_CONFIG: GPT2Config


# --- the texts ---------------------------------------------------------------------------


def stdlib_root() -> pathlib.Path:
    """The running interpreter's standard library directory."""
    return pathlib.Path(sysconfig.get_paths()["stdlib"])


def _is_library_source(rel: pathlib.PurePath) -> bool:
    if set(rel.parts[:-1]) & _SKIP_DIRS or rel.parts[0].startswith("config-"):
        return False
    return not (rel.name.startswith(("test_", "_sysconfigdata")) or rel.name == "conftest.py")


@functools.lru_cache(maxsize=1)
def _stdlib_documents() -> tuple[tuple[str, str], ...]:
    root = stdlib_root()
    docs = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if not _is_library_source(rel):
            continue
        try:
            docs.append((rel.as_posix(), path.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, OSError):  # a distro's odd file: not worth failing over
            continue
    if not docs:
        raise UserError(f"no Python sources found under {root}: python-stdlib needs them")
    return tuple(docs)


@functools.lru_cache(maxsize=1)
def _docs_documents() -> tuple[tuple[str, str], ...]:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise UserError(
            "this Python ships without pydoc_data: python-docs needs a full CPython install"
        ) from None
    return tuple(sorted(topics.items()))


def _named_documents(name: str) -> tuple[tuple[str, str], ...]:
    if name == "python-stdlib":
        return _stdlib_documents()
    if name == "python-docs":
        return _docs_documents()
    raise UserError(f"unknown natural-text dataset {name!r}: use python-stdlib or python-docs")


def documents(name: str) -> list[str]:
    """The documents of ``python-stdlib`` or ``python-docs``, in a fixed order."""
    return [text for _, text in _named_documents(name)]


@functools.lru_cache(maxsize=4)
def content_hash(name: str) -> str:
    """sha256 over the (name, text) of every document, in order."""
    h = hashlib.sha256()
    for doc_name, text in _named_documents(name):
        h.update(doc_name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()


def dataset_info(name: str) -> dict:
    """What identifies the text: the Python version, where it came from, a content hash."""
    origin = (
        f"standard library .py sources under {stdlib_root()} (tests excluded)"
        if name == "python-stdlib"
        else "pydoc_data.topics (English language-reference topics)"
    )
    return {
        "dataset": name,
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "origin": origin,
        "content_sha256": content_hash(name),
    }


# --- the tokenizer -------------------------------------------------------------------------


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE tokenizer (GPT-2 style, EOS id 0) trained on texts, as an HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        bos_token=EOS,
        pad_token=EOS,  # byte-level: no unknown token is ever needed
        model_max_length=N_POSITIONS,
    )


def tiny_python_version() -> str:
    """Cache tag of tiny-python: recipe version and Python version.

    The Python version stands in for the stdlib's content (a cheap tag: it is computed at
    import); the exact content hash is in the model's summary and in the tokenizer's
    cache directory name.
    """
    return f"{VERSION}-py{platform.python_version()}"


def tiny_python_tokenizer():
    """The tiny-python tokenizer, trained on python-stdlib once and cached (a few seconds)."""
    from transformers import AutoTokenizer

    tag = f"{tiny_python_version()}-{content_hash('python-stdlib')[:12]}"
    target = cache_dir() / "tokenizers" / f"tiny-python-{tag}"
    if not (target / "tokenizer.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=".tiny-python-tokenizer-", dir=target.parent))
        try:
            train_tokenizer(documents("python-stdlib")).save_pretrained(tmp)
            try:
                os.rename(tmp, target)
            except OSError:  # another process finished first: use theirs
                if not (target / "tokenizer.json").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(target)


# --- pretraining ----------------------------------------------------------------------------


def _lr_at(step: int) -> float:
    return scheduled_lr(step, lr=LR, warmup=WARMUP, steps=STEPS, min_frac=MIN_LR_FRAC)


def pretrain_tiny_python(out_dir: pathlib.Path, progress=None) -> dict:
    """Pretrain tiny-python on python-stdlib; save model, tokenizer and a summary JSON.

    progress: optional callable(step, steps, loss) for a status line.
    """
    import torch
    from transformers import GPT2LMHeadModel

    from loraplace.builtin.pretrain import eval_loss, pretrain_loop, unigram_loss
    from loraplace.data import load_blocks
    from loraplace.device import cpu_has_native_bf16

    start, cpu_start = time.perf_counter(), time.process_time()
    tokenizer = tiny_python_tokenizer()
    # split_seed 0: studies that measure forgetting on python-stdlib with the default
    # split evaluate on blocks this model never trained on.
    blocks = load_blocks("python-stdlib", tokenizer, BLOCK_SIZE, split_seed=SEED)
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(_tiny_python_config())
    bf16 = cpu_has_native_bf16()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.0)
    order = torch.randperm(len(blocks.train), generator=torch.Generator().manual_seed(SEED))

    def batch_at(step: int) -> torch.Tensor:
        # Cycles through the train split without repeats until it is exhausted.
        return blocks.train[order[(torch.arange(BATCH_SIZE) + step * BATCH_SIZE) % len(order)]]

    loss_val = pretrain_loop(
        model,
        opt,
        batch_at,
        steps=STEPS,
        lr_at=_lr_at,
        bf16=bf16,
        grad_clip=GRAD_CLIP,
        progress=progress,
    )
    train_seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start

    val = blocks.val[:N_VAL]
    loss_model = eval_loss(model, val, bf16=False)
    loss_unigram = unigram_loss(blocks.train, val, VOCAB_SIZE)
    summary = {
        "name": "tiny-python",
        "version": tiny_python_version(),
        "tokenizer_vocab": len(tokenizer),
        "python_version": platform.python_version(),
        "stdlib_sha256": content_hash("python-stdlib"),
        "seed": SEED,
        "steps": STEPS,
        "batch_size": BATCH_SIZE,
        "block_size": BLOCK_SIZE,
        "train_tokens": STEPS * BATCH_SIZE * BLOCK_SIZE,
        "train_blocks_available": len(blocks.train),
        "bf16_autocast": bf16,
        "final_train_loss": loss_val,
        "val_loss": loss_model,
        "unigram_loss": loss_unigram,
        "val_blocks": len(val),
        "seconds": round(train_seconds, 1),  # includes tokenizer training and tokenising
        # CPU time of all threads: on a shared machine, seconds / threads ~ an idle one's wall.
        "cpu_seconds": round(cpu_seconds, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "params": sum(p.numel() for p in model.parameters()),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / INFO_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def build_tiny_python(out_dir: pathlib.Path) -> None:
    """Pretrain tiny-python and save_pretrained model and tokenizer into out_dir."""
    pretrain_tiny_python(pathlib.Path(out_dir))


def text_source(name: str) -> TextSource:
    """python-stdlib or python-docs as a source of documents (for ``load_blocks``)."""
    docs = documents(name)
    info = {"source": "builtin", **dataset_info(name)}
    return TextSource(
        name=name,
        kind="builtin",
        content_hash=info["content_sha256"],
        read=lambda: docs,
        info=info,
    )


def _register() -> None:
    register_builtin_model(
        BuiltinModel(
            name="tiny-python",
            version=tiny_python_version(),
            description="4-layer GPT-2 (d=128, BPE 2048) pretrained on the Python stdlib sources",
            config=_tiny_python_config,
            pretrain=pretrain_tiny_python,
            datasets=("python-docs", "python-stdlib"),
            tokenizer=tiny_python_tokenizer,
        )
    )
    # The stdlib is what tiny-python knows: the retain set when adapting to the docs.
    for name, retain in (("python-stdlib", None), ("python-docs", "python-stdlib")):
        register_dataset(
            RegisteredDataset(name=name, model="tiny-python", source=text_source, retain=retain)
        )


_register()
