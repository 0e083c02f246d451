"""Pretraining the built-in ``tiny-markov`` base model on the source process.

A 4-layer GPT-2 (GPT-2's module names, so ``c_attn``/``c_proj``/``c_fc`` placements apply
unchanged), trained deterministically from a fixed seed on fixed data, then written with
``save_pretrained`` (model + tokenizer) like any Hugging Face model.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from loraplace.builtin import markov
from loraplace.builtin.shipped import weights_fingerprint
from loraplace.device import cpu_has_native_bf16
from loraplace.schedule import scheduled_lr

VERSION = f"v{markov.GENERATOR_VERSION}"  # cache key: a generator change invalidates the model
INFO_FILE = "loraplace_builtin.json"

# Pretraining recipe (the numbers a reader would tune are here, with their units).
SEED = 0
BLOCK_SIZE = 128  # tokens per sequence = n_positions
BATCH_SIZE = 16  # sequences per step: more, smaller steps learn faster per token here
STEPS = 1200  # optimizer steps: 2.46M tokens
LR = 6e-3  # peak AdamW learning rate
WARMUP = 60  # linear warm-up steps
MIN_LR_FRAC = 0.05  # cosine decays to this share of LR
WEIGHT_DECAY = 0.0
GRAD_CLIP = 1.0
N_VAL = 256  # held-out source blocks for the reported figure


def recipe() -> dict:
    """Everything besides the code that determines tiny-markov's weights (tests pin its hash)."""

    cfg = tiny_markov_config()
    # Named fields only: the full config dict grows keys with transformers releases.
    keys = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "activation_function")
    config = {k: getattr(cfg, k) for k in keys}
    return {
        "version": VERSION,
        "generator": asdict(markov.DEFAULT_PARAMS),
        "config": config,
        "seed": SEED,
        "block_size": BLOCK_SIZE,
        "batch_size": BATCH_SIZE,
        "steps": STEPS,
        "lr": LR,
        "warmup": WARMUP,
        "min_lr_frac": MIN_LR_FRAC,
        "weight_decay": WEIGHT_DECAY,
        "grad_clip": GRAD_CLIP,
    }


def tiny_gpt2_config(*, vocab_size: int, n_positions: int, bos: int, eos: int, pad: int | None):
    """The built-ins' GPT-2 shape: 4 layers, d=128, 4 heads, no dropout."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=128,
        n_layer=4,
        n_head=4,
        # Same maths as GPT-2's gelu_new, but one fused kernel: ~40 % less element-wise time.
        activation_function="gelu_pytorch_tanh",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        # Eager attention beats sdpa at this size on CPU under bf16 (not saved in
        # config.json); fp32 runs switch to sdpa (models.attention_kernel).
        attn_implementation="eager",
    )


def tiny_markov_config():
    """The GPT-2 config of tiny-markov: the built-ins' shape, 128 positions."""
    return tiny_gpt2_config(
        vocab_size=markov.VOCAB_SIZE,
        n_positions=BLOCK_SIZE,
        bos=markov.VOCAB[markov.SRC],
        eos=markov.EOS_ID,
        pad=markov.EOS_ID,
    )


def tiny_markov_tokenizer():
    """A real HF fast tokenizer over the benchmark's vocabulary: "t0 t5 <copy> ..." -> ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=dict(markov.VOCAB), unk_token=markov.UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=markov.EOS,
        bos_token=markov.SRC,
        pad_token=markov.EOS,
        unk_token=markov.UNK,
        additional_special_tokens=[markov.COPY, markov.LEX, markov.TRN, markov.CPY],
        model_max_length=BLOCK_SIZE,
    )


def _lr_at(step: int) -> float:
    return scheduled_lr(step, lr=LR, warmup=WARMUP, steps=STEPS, min_frac=MIN_LR_FRAC)


def pretrain_loop(
    model,
    opt,
    batch_at: Callable[[int], torch.Tensor],
    *,
    steps: int,
    lr_at: Callable[[int], float],
    bf16: bool,
    grad_clip: float,
    progress=None,
) -> float:
    """The built-in models' pretraining loop (next-token loss, clipping, AdamW).

    Returns the last train loss reported to ``progress`` (NaN without one).
    """
    model.train()
    loss_val = float("nan")
    for step in range(steps):
        x = batch_at(step)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if progress is not None and (step % 10 == 0 or step == steps - 1):
            loss_val = float(loss.detach())
            progress(step + 1, steps, loss_val)
    return loss_val


@torch.no_grad()
def eval_loss(model, tokens: torch.Tensor, bf16: bool = False, batch: int = 64) -> float:
    """Token-weighted mean NLL (nats) of a model on blocks, positions 1.. scored."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(tokens), batch):
        x = tokens[i : i + batch]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=x).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)
        total += float(nll.double().sum())
        count += nll.numel()
    return total / count


def unigram_loss(train, val, vocab_size: int = markov.VOCAB_SIZE) -> float:
    """NLL of val tokens (positions 1..) under the add-one unigram distribution of train.

    train, val: token blocks (numpy arrays or CPU tensors).
    """
    train, val = np.asarray(train), np.asarray(val)
    counts = np.bincount(train[:, 1:].ravel(), minlength=vocab_size) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[val[:, 1:]].mean())


def pretrain_tiny_markov(out_dir: Path, progress=None) -> dict:
    """Pretrain tiny-markov, save model + tokenizer + a summary JSON into out_dir.

    progress: optional callable(step, steps, loss) for a status line.
    Returns the summary (also written to ``out_dir/loraplace_builtin.json``).
    """
    from transformers import GPT2LMHeadModel

    start = time.perf_counter()
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(tiny_markov_config())
    model.loss_type = "ForCausalLM"  # silences a transformers warning; the default loss
    data = markov.pretrain_tokens(STEPS * BATCH_SIZE, BLOCK_SIZE, SEED)
    bf16 = cpu_has_native_bf16()
    # Weight decay only on matrices, as in nanoGPT; biases, LayerNorms and embeddings stay free.
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wpe" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "wpe" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0}],
        lr=LR,
        betas=(0.9, 0.95),
    )
    loss_val = pretrain_loop(
        model,
        opt,
        lambda step: torch.from_numpy(data[step * BATCH_SIZE : (step + 1) * BATCH_SIZE]),
        steps=STEPS,
        lr_at=_lr_at,
        bf16=bf16,
        grad_clip=GRAD_CLIP,
        progress=progress,
    )
    train_seconds = time.perf_counter() - start

    # The markov-source val split, from its own random stream: never seen in pretraining.
    val_blocks = markov.markov_blocks("markov-source", BLOCK_SIZE, n_train=1, n_val=N_VAL)
    floor = val_blocks.floor
    assert floor is not None  # markov blocks always carry their oracle NLL
    loss_model = eval_loss(model, val_blocks.val, bf16=False)
    loss_unigram = unigram_loss(data, val_blocks.val.numpy())
    summary = {
        "name": "tiny-markov",
        "version": VERSION,
        "seed": SEED,
        "steps": STEPS,
        "batch_size": BATCH_SIZE,
        "block_size": BLOCK_SIZE,
        "train_tokens": STEPS * BATCH_SIZE * BLOCK_SIZE,
        "bf16_autocast": bf16,
        "final_train_loss": loss_val,
        "val_loss": loss_model,
        "unigram_loss": loss_unigram,
        "floor": floor,
        "gap_closed": (loss_unigram - loss_model) / (loss_unigram - floor),
        "val_blocks": N_VAL,
        "val_data_seed": 0,
        "seconds": round(train_seconds, 1),
        "tokens_per_s": round(STEPS * BATCH_SIZE * BLOCK_SIZE / train_seconds),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "params": sum(p.numel() for p in model.parameters()),
        "recipe": recipe(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tiny_markov_tokenizer().save_pretrained(out_dir)
    summary["weights_sha256"] = weights_fingerprint(out_dir)  # what the shipped copy must match
    (out_dir / INFO_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
