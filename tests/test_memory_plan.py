"""`plan --memory`: each part of the estimate from shapes, the activation count of the meta
trace equal to the same count on real tensors, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from run_fixtures import load_tiny

from loraplace.placement import resolve
from loraplace.quantize import weight_bytes
from loraplace.train.memory_estimate import estimate_memory, peak_bytes, weight_bytes_of

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("tiny"))


def test_parts_of_the_estimate(tiny):
    model, _ = tiny
    rp = resolve("seed-full", model, rank=2)
    e = estimate_memory(model.config, rp, batch_size=8, block_size=16)
    assert (e.adapter, e.optimizer) == (2048 * 4, 2 * 2048 * 4)
    assert e.weights == 4 * sum(p.numel() for p in model.parameters()) == 4 * 28384
    assert e.run_bytes == e.adapter + e.optimizer + max(e.train_peak, e.eval_peak)
    assert e.total == e.weights + e.run_bytes
    # logits of the eval batch (64 x 15 x 27 fp32) are alive at its peak
    assert e.eval_peak > 64 * 15 * 27 * 4
    with_bias = estimate_memory(
        model.config, rp, batch_size=8, block_size=16, lora_bias=True, modules_to_save=["ln_f"]
    )
    assert with_bias.adapter == (2048 + 576 + 64) * 4
    # a quarter of the batch per micro-batch: about a quarter of the training peak
    quarter = estimate_memory(model.config, rp, batch_size=8, block_size=16, grad_accum=4)
    assert quarter.train_peak * 4 == pytest.approx(e.train_peak, rel=0.05)
    assert quarter.eval_peak == e.eval_peak
    ckpt = estimate_memory(model.config, rp, batch_size=8, block_size=16, grad_checkpointing=True)
    assert ckpt.train_peak < e.train_peak


def test_quantized_weights_are_the_packed_linear_layers_plus_the_rest(tiny):
    from loraplace.models import meta_model

    model, _ = tiny
    meta = meta_model(model.config)
    linear = [(96, 32), (32, 32), (128, 32), (32, 128)] * 2  # c_attn, attn/mlp c_proj, c_fc
    n_linear = sum(o * i for o, i in linear)
    rest = sum(p.numel() for p in model.parameters()) - n_linear  # embeddings, norms, biases
    assert weight_bytes_of(meta, "4bit") == weight_bytes(linear, "4bit") + 4 * rest
    assert weight_bytes_of(meta, "8bit") == weight_bytes(linear, "8bit") + 4 * rest


@pytest.mark.parametrize(
    "dora, ckpt, train, exact",
    [
        (False, False, True, True),
        (False, False, False, True),
        (False, True, True, True),  # recomputation in the backward pass, traced
        (True, False, True, False),  # DoRA's weight norm: CPU and meta kernels differ
        (True, False, False, True),
        (True, True, True, True),
    ],
)
def test_meta_peak_equals_the_peak_on_real_tensors(tiny, dora, ckpt, train, exact):
    """The traced peak on meta tensors equals the same step's peak on the loaded CPU model."""
    from peft import get_peft_model

    from loraplace.models import meta_model
    from loraplace.placement import lora_config
    from loraplace.train.inject import checkpointing

    model, _ = tiny
    rp = resolve("seed-full", model, rank=2, use_dora=dora)
    # Eager attention (the built-ins'): on meta tensors sdpa takes its math path, while on
    # a CPU or GPU it runs a fused kernel that keeps other tensors.
    model.config._attn_implementation = "eager"
    meta = meta_model(model.config)
    meta.config.pad_token_id = None
    for p in meta.parameters():
        p.requires_grad_(False)
    peaks = []
    for m, device in ((meta, "meta"), (model, "cpu")):
        net = get_peft_model(m, lora_config(rp.modules, use_dora=dora))
        stop = checkpointing(m, ckpt)
        try:
            net.train(train)
            peaks.append(peak_bytes(net, 8, 16, train=train, device=device))
        finally:
            stop()
            net.unload()
    model.config._attn_implementation = "sdpa"
    model.eval()
    if exact:
        assert peaks[0] == peaks[1] > 0
    else:
        assert peaks[0] == pytest.approx(peaks[1], rel=0.02)


def test_estimate_traces_the_models_attention_and_no_kv_cache(tiny):
    """A config copy keeps its attention kernel; the loss's forward asks for no KV cache."""
    from peft import get_peft_model

    from loraplace.placement import lora_config
    from loraplace.train.evaluate import token_nll

    model, blocks = tiny
    rp = resolve("seed-full", model, rank=2)
    model.config._attn_implementation = "eager"
    try:
        eager = estimate_memory(model.config, rp, batch_size=8, block_size=16, eval_batch_size=8)
    finally:
        model.config._attn_implementation = "sdpa"
    sdpa = estimate_memory(model.config, rp, batch_size=8, block_size=16, eval_batch_size=8)
    # eager keeps each layer's 8 x 2 x 16 x 16 fp32 attention probabilities (and its mask)
    assert eager.eval_peak > sdpa.eval_peak + 8 * 2 * 16 * 16 * 4
    seen = {}

    def record(module, args, kwargs):
        seen.update(use_cache=kwargs.get("use_cache"))

    net = get_peft_model(model, lora_config(rp.modules))
    hook = model.transformer.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            token_nll(net, blocks.val[:2])
    finally:
        hook.remove()
        net.unload()
    assert seen == {"use_cache": False}


def test_plan_memory_cli(tmp_path, capsys, tiny):
    from loraplace.cli import run_cli

    model, _ = tiny
    path = tmp_path / "m"
    model.save_pretrained(path)
    args = ["plan", str(path), "seed-full", "seed-ffn", "-r", "2", "--memory", "--batch-size", "8"]
    assert run_cli([*args, "--block-size", "16", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    mem = [p["memory_bytes"] for p in doc["placements"]]
    assert mem[0]["adapter"] == 2048 * 4 and mem[0]["run_bytes"] > mem[1]["run_bytes"]
    # --dora: DoRA's 576 magnitudes (one per output feature of each adapted module) counted
    # and traced (its weight norm every forward pass is activation memory)
    assert run_cli([*args, "--block-size", "16", "--json", "--dora"]) == 0
    dora = json.loads(capsys.readouterr().out)["placements"][0]
    assert dora["trainable_params"] == 2048 + 576 and dora["use_dora"]
    assert dora["memory_bytes"]["adapter"] == (2048 + 576) * 4
    assert dora["memory_bytes"]["train_peak"] > mem[0]["train_peak"]
    assert run_cli([*args, "--block-size", "16"]) == 0
    assert "training memory estimate" in capsys.readouterr().out
    assert run_cli([*args, "--grad-accum", "3"]) == 2
    assert "grad_accum 3 must be" in capsys.readouterr().err


def test_a_boolean_read_on_meta_answers_true_and_other_reads_are_refused():
    """transformers' packed/padded-sequence checks read one bool; nothing else may pass."""
    from loraplace.train.memory_estimate import LiveBytes

    with LiveBytes(set()):
        assert bool((torch.zeros(2, 3, device="meta") == 0).all()) is True
        with pytest.raises(NotImplementedError, match=r"a value of a meta tensor \(torch.float32"):
            torch.zeros(3, device="meta").sum().item()
