"""Quantized bases: accounting from shapes (no bitsandbytes needed), and a QLoRA-style run
on the CPU where bitsandbytes runs there (skipped, with the reason printed, where not)."""

from __future__ import annotations

import pytest
import torch
from run_fixtures import write_text, write_tiny_model

from loraplace.errors import UserError
from loraplace.placement import resolve
from loraplace.quantize import QUANT_BLOCK, bitsandbytes_version, check_shapes, weight_bytes
from loraplace.runs import RunSpec, TrainSettings

torch.set_num_threads(1)
BNB = bitsandbytes_version()
needs_bnb = pytest.mark.skipif(BNB is None, reason="bitsandbytes is not installed or cannot load")


def test_weight_bytes_from_shapes_alone():
    # 4bit: 64x64 = 4096 values -> 2048 bytes, 64 absmax blocks of 1 byte, 1 fp32 scale
    assert weight_bytes([(64, 64)], "4bit") == 2048 + 64 + 4
    assert weight_bytes([(64, 64)], "8bit") == 4096 + 4 * 64  # int8 + a scale per row
    assert weight_bytes([(64, 64)], None) == 4096 * 4
    assert weight_bytes([(64, 64)], None, dtype_bytes=2) == 4096 * 2
    # a 4096 x 4096 layer: 4-bit is ~0.127 of fp32 (QLoRA's ~4.127 bits per value)
    ratio = weight_bytes([(4096, 4096)], "4bit") / weight_bytes([(4096, 4096)], None)
    assert ratio == pytest.approx(4.127 / 32, abs=1e-3)


def test_4bit_refuses_layers_narrower_than_a_quant_block_in_one_line():
    check_shapes("4bit", [64, 128])
    check_shapes("8bit", [32])
    with pytest.raises(UserError, match=f"multiple of {QUANT_BLOCK} .this model has 32"):
        check_shapes("4bit", [64, 32])


def test_meta_accounting_of_a_quantized_placement_equals_the_unquantized_one():
    """Adapters are full precision on top of the quantized base: the same trainable count."""
    from transformers import GPT2Config

    from loraplace.models import meta_model

    meta = meta_model(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=27, n_positions=64))
    rp = resolve("seed-full", meta, rank=4)
    assert rp.trainable_params == 2 * 4 * ((64 + 192) + (64 + 64) + (64 + 256) + (256 + 64))


@needs_bnb
@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_quantized_run_trains_counts_like_peft_and_gives_the_base_back(tmp_path, quantize):
    from peft import get_peft_model

    from loraplace.assets import Assets
    from loraplace.data import load_blocks
    from loraplace.placement import lora_config
    from loraplace.train import train_run

    print(f"bitsandbytes {BNB} on the CPU")
    path = write_tiny_model(tmp_path / "m", n_embd=64)
    assets = Assets()
    model, tok = assets.model(str(path), "cpu", quantize)
    kind = {"4bit": "Linear4bit", "8bit": "Linear8bitLt"}[quantize]
    assert type(model.transformer.h[0].attn.c_attn).__name__ == kind
    blocks = load_blocks(str(write_text(tmp_path / "g.txt")), tok, 16)
    rp = resolve("seed-full", model, rank=2)
    spec = RunSpec(
        study="q",
        placement_name="seed-full",
        kind="lora",
        model=str(path),
        dataset="g",
        seed=0,
        train=TrainSettings(steps=6, batch_size=8, block_size=16, lr=1e-2, warmup_steps=2),
        modules=rp.as_dicts(),
        quantize=quantize,
    )
    r = train_run(spec, model, blocks, keep_adapter=False)
    m = r.metrics
    assert r.status == "done" and m["eval_loss"] < m["zero_shot_loss"] - 0.05
    assert m["trainable_params"] == rp.trainable_params == 2 * 2 * (256 + 128 + 320 + 320)
    assert m["total_params"] == 105920  # the unquantized count, not the packed one
    assert r.manifest["quantize"] == quantize
    assert type(model.transformer.h[0].attn.c_attn).__name__ == kind  # adapters gone
    trainable, total = get_peft_model(model, lora_config(rp.modules)).get_nb_trainable_parameters()
    assert (trainable, total) == (rp.trainable_params, 105920 + rp.trainable_params)


@needs_bnb
def test_4bit_on_a_model_narrower_than_a_block_is_one_line(tmp_path):
    from loraplace.assets import Assets

    path = write_tiny_model(tmp_path / "m")  # n_embd 32
    with pytest.raises(UserError, match="4bit needs every linear layer's input size"):
        Assets().model(str(path), "cpu", "4bit")
