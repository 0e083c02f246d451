"""Kernel swaps for a run: same outputs within float rounding, and undone afterwards."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.activations import GELUTanh, NewGELUActivation

from loraplace.train.kernels import fuse_activations

torch.set_num_threads(1)


def test_fused_gelu_matches_gelu_new_and_is_restored():
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=16)
    model = GPT2LMHeadModel(cfg).eval()
    originals = [b.mlp.act for b in model.transformer.h]
    assert all(type(a) is NewGELUActivation for a in originals)
    x = torch.randint(0, 50, (3, 16))
    with torch.no_grad():
        before = model(input_ids=x).logits
        restore = fuse_activations(model)
        assert all(type(b.mlp.act) is GELUTanh for b in model.transformer.h)
        fused = model(input_ids=x).logits
        restore()
        after = model(input_ids=x).logits
    assert (fused - before).abs().max().item() < 1e-5  # rounding, not a different formula
    assert torch.equal(after, before)
    assert [b.mlp.act for b in model.transformer.h] == originals  # the very same objects
    wide = torch.linspace(-8, 8, 10001)
    assert (GELUTanh()(wide) - NewGELUActivation()(wide)).abs().max().item() < 1e-6


def test_models_without_gelu_new_are_untouched():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.GELU())
    restore = fuse_activations(model)
    assert type(model[1]) is torch.nn.GELU
    restore()
