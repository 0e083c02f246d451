"""Frozen-prefix reuse: eligibility, identical losses to the plain path, cache bookkeeping."""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from loraplace.placement import lora_config, resolve
from loraplace.train.evaluate import token_nll
from loraplace.train.prefix_cache import PrefixCache, frozen_prefix_layers, runner_for

torch.set_num_threads(1)  # tiny model: threads only add contention on a shared machine


def _model(attn: str = "eager", dropout: float = 0.0) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=4,
        n_embd=32,
        n_head=2,
        vocab_size=50,
        n_positions=16,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
    )
    cfg._attn_implementation = attn
    model = GPT2LMHeadModel(cfg)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _inject(model, layers: str, placement: str = "seed-full"):
    from peft import get_peft_model

    modules = resolve(placement, model, rank=2, layers=layers).as_dicts()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = get_peft_model(model, lora_config(modules))
    # Non-zero B: with B = 0 the adapters would be invisible and the test would prove less.
    for name, p in net.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.1)
    return net


@pytest.mark.parametrize(
    "layers, dropout, expected_k",
    [
        ("last:2", 0.0, 2),  # top half of 4 layers: layers 0-1 are a frozen prefix
        ("3", 0.0, 3),
        ("all", 0.0, 0),  # adapters from layer 0: nothing to cache
        ("first:1", 0.0, 0),
        ("last:2", 0.1, 0),  # base dropout in the prefix makes its output random
    ],
)
def test_frozen_prefix_layers(layers, dropout, expected_k):
    net = _inject(_model(dropout=dropout), layers)
    net.train()
    assert frozen_prefix_layers(net.base_model.model) == expected_k


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_cached_loss_and_grads_match_the_plain_path(attn):
    model = _model(attn)
    net = _inject(model, "last:2")
    net.train()
    data = torch.randint(0, 50, (12, 16), generator=torch.Generator().manual_seed(1))
    runner = runner_for(model, precision="fp32", cache=PrefixCache(max_bytes=1 << 30))
    assert runner is not None and runner.k == 2
    trainable = [p for p in net.parameters() if p.requires_grad]
    for rows in (torch.tensor([0, 5, 7, 2]), torch.tensor([5, 2, 9, 11])):  # 2 rows repeat
        x = data[rows]
        plain = token_nll(net, x)
        g_plain = torch.autograd.grad(plain.mean(), trainable)
        cached = runner.token_nll("train", data, rows, x)
        g_cached = torch.autograd.grad(cached.mean(), trainable)
        assert cached.shape == (4, 15)
        assert (cached - plain).abs().max().item() < 1e-6
        for a, b in zip(g_cached, g_plain, strict=True):
            assert (a - b).abs().max().item() < 1e-6
    assert (runner.cache.misses, runner.cache.hits) == (6, 2)


def test_cache_is_keyed_by_weights_split_and_bounded():
    model = _model()
    _inject(model, "last:2")
    data = torch.randint(0, 50, (8, 16), generator=torch.Generator().manual_seed(2))
    rows = torch.arange(4)
    cache = PrefixCache(max_bytes=1 << 30)
    runner = runner_for(model, precision="fp32", cache=cache)
    runner.token_nll("train", data, rows, data[rows])
    runner.token_nll("train", data, rows, data[rows])
    assert (cache.misses, cache.hits) == (4, 4)
    runner.token_nll("val", data, rows, data[rows])  # another split: its own entry
    assert cache.misses == 8
    with torch.no_grad():  # an in-place edit of a prefix weight must not reuse old states
        model.transformer.h[0].mlp.c_fc.weight.add_(1.0)
    fresh = runner_for(model, precision="fp32", cache=cache)
    fresh.token_nll("train", data, rows, data[rows])
    assert cache.misses == 12
    assert cache.nbytes == 3 * 8 * 16 * 32 * 4
    # A bound smaller than one split: nothing is stored, the numbers stay the same.
    small = runner_for(model, precision="fp32", cache=PrefixCache(max_bytes=1000))
    out = small.token_nll("train", data, rows, data[rows])
    assert small.cache.nbytes == 0
    assert (out - fresh.token_nll("train", data, rows, data[rows])).abs().max().item() < 1e-6


def test_no_runner_when_disabled_or_not_eligible():
    model = _model()
    _inject(model, "all")
    assert runner_for(model, precision="fp32") is None  # k = 0
    model = _model()
    _inject(model, "last:2")
    assert runner_for(model, precision="fp32", cache=False) is None
    assert runner_for(model, precision="fp32", cache=PrefixCache(max_bytes=0)) is None
    assert runner_for(torch.nn.Linear(2, 2), precision="fp32") is None  # not GPT-2


def test_train_run_with_prefix_reuse_gives_the_same_numbers():
    from loraplace.data import Blocks
    from loraplace.runs import RunSpec, TrainSettings
    from loraplace.train import train_run

    model = _model()
    g = torch.Generator().manual_seed(3)
    blocks = Blocks(
        name="rand",
        train=torch.randint(0, 50, (12, 16), generator=g),
        val=torch.randint(0, 50, (6, 16), generator=g),
        fingerprint="rand-0",
        n_docs=1,
        n_tokens=18 * 16,
    )
    spec = RunSpec(
        study="t",
        placement_name="top-half",
        kind="lora",
        model="m",
        dataset="rand",
        seed=0,
        # 3 epochs of 3 steps: epochs 2 and 3 read every row from the cache
        train=TrainSettings(steps=9, batch_size=4, block_size=16, lr=1e-2, warmup_steps=2),
        modules=resolve("seed-full", model, rank=2, layers="last:2").as_dicts(),
    )
    cache = PrefixCache(max_bytes=1 << 30)
    cached = train_run(spec, model, blocks, prefix_cache=cache, peak_flops=1e9)
    plain = train_run(spec, model, blocks, prefix_cache=False, peak_flops=1e9)
    assert cached.manifest["prefix_layers_cached"] == 2
    assert plain.manifest["prefix_layers_cached"] == 0
    # every train row once, then 2 epochs from the cache; the val rows once (final eval)
    assert (cache.misses, cache.hits) == (12 + 6, 2 * 12)
    assert abs(cached.metrics["eval_loss"] - plain.metrics["eval_loss"]) < 1e-6
    for (s1, a), (s2, b) in zip(
        cached.curves["train_loss"], plain.curves["train_loss"], strict=True
    ):
        assert s1 == s2 and abs(a - b) < 1e-6
    # The next run of the study (another seed) finds every block's prefix already cached.
    again = train_run(replace(spec, seed=1), model, blocks, prefix_cache=cache, peak_flops=1e9)
    # Trained to the end with numbers; 9 steps of a random model may end just above its
    # zero-shot loss, which stores it "flagged" (train/divergence.py), numbers kept.
    assert again.status in ("done", "flagged") and again.metrics["eval_loss"] > 0
    assert (cache.misses, cache.hits) == (12 + 6, 2 * 12 + 3 * 12 + 6)
