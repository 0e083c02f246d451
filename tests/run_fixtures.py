"""A tiny GPT-2, its word-level tokenizer and a small text dataset, written to disk.

Shared by the run tests: the model is saved with ``save_pretrained`` so it loads through
the same path a hub model takes; the text follows a simple grammar, so LoRA training
measurably lowers the loss within a few steps.
"""

from __future__ import annotations

import random
from pathlib import Path

SUBJECTS = ["the cat", "a dog", "my bird", "the fox", "her fish", "our cow"]
VERBS = ["sees", "eats", "likes", "finds", "chases", "hears"]
OBJECTS = ["the moon", "a bone", "some seed", "the hen", "a worm", "the sun"]


def write_text(path: Path, n_sentences: int = 600, seed: int = 0) -> Path:
    """A .txt of grammatical sentences: subject verb object ."""
    rng = random.Random(seed)
    words = []
    for _ in range(n_sentences):
        words.append(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} .")
    path.write_text(" ".join(words) + "\n", encoding="utf-8")
    return path


def write_tiny_model(root: Path, *, n_layer: int = 2, n_embd: int = 32) -> Path:
    """Save a random-init GPT-2 (dropout off) and a whitespace tokenizer under root."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab_words = sorted({w for p in SUBJECTS + VERBS + OBJECTS for w in p.split()} | {"."})
    vocab = {"<eos>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(vocab_words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=2,
        vocab_size=len(vocab),
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    root.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def write_tiny_llama(root: Path, *, hidden: int = 48, n_layer: int = 2) -> Path:
    """A random-init LLaMA (save_pretrained from a LlamaConfig) beside the tiny GPT-2: same
    tokenizer and data, another family's module names, so placements resolve by role."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gpt2 = root.parent / f"{root.name}-tokenizer"
    if not gpt2.exists():
        write_tiny_model(gpt2)
    tokenizer = AutoTokenizer.from_pretrained(gpt2)
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layer,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=False,
    )
    root.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def load_tiny(root: Path):
    """(frozen tiny GPT-2, blocks of the grammar text at block size 16) written under root."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loraplace.data import load_blocks

    write_tiny_model(root / "model")
    model = AutoModelForCausalLM.from_pretrained(root / "model")
    tokenizer = AutoTokenizer.from_pretrained(root / "model")
    for p in model.parameters():
        p.requires_grad_(False)
    blocks = load_blocks(str(write_text(root / "g.txt")), tokenizer, 16)
    return model, blocks


def tiny_study(tmp: Path, **overrides) -> dict:
    """A study config on the tiny model: 2 placements x 2 seeds + zero-shot, a few steps."""
    model_dir = tmp / "tiny-gpt2"
    if not model_dir.exists():
        write_tiny_model(model_dir)
    data = tmp / "grammar.txt"
    if not data.exists():
        write_text(data)
    config = {
        "name": "tiny",
        "model": str(model_dir),
        "dataset": str(data),
        "retain": None,
        "placements": ["seed-full", "seed-ffn"],
        "rank": 2,
        "seeds": [0, 1],
        "train": {
            "steps": 6,
            "batch_size": 4,
            "block_size": 16,
            "lr": 1e-2,
            "warmup_steps": 2,
            "precision": "fp32",
        },
        "eval": {"every": 3, "batch_size": 32},
        "out": str(tmp / "out"),
    }
    config.update(overrides)
    return config


def run_study(tmp: Path, config: dict) -> tuple[list[dict], dict]:
    """Run the study config with the CLI (exit code 0); (its runs, their metrics)."""
    import yaml

    from loraplace.cli import run_cli
    from loraplace.store import Store

    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    assert run_cli(["run", str(path)]) == 0
    with Store(Path(config["out"]), create=False, writer=False) as store:
        return store.runs(store.study()["study_id"]), store.metrics()
