"""Kernel swaps for a run: same outputs within float rounding, and undone afterwards."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.activations import GELUTanh, NewGELUActivation

from loraplace.train.kernels import fuse_activations, next_token_nll

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


def test_next_token_nll_matches_cross_entropy_values_and_gradients():
    import pytest

    torch.manual_seed(0)
    logits = torch.randn(37, 1000) * 3
    targets = torch.randint(0, 1000, (37,))
    weights = torch.rand(37)  # a non-uniform upstream gradient
    a = logits.clone().requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(a, targets, reduction="none")
    (ref * weights).sum().backward()
    b = logits.clone().requires_grad_(True)
    got = next_token_nll(b, targets)
    assert torch.equal(got, ref.detach())  # the same forward kernels
    (got * weights).sum().backward(retain_graph=True)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-6, atol=1e-9)
    with pytest.raises(RuntimeError, match="one backward pass"):
        (got * weights).sum().backward()
    with torch.no_grad():
        assert torch.equal(next_token_nll(logits, targets), ref.detach())
