"""The fused LoRA forward: PEFT's outputs and gradients, fallbacks, and undone afterwards."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

from loraplace.train.lora_kernel import _fused_forward, fuse_lora

torch.set_num_threads(1)


def _peft_gpt2(dropout: float = 0.0, alpha: int = 16):
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=16)
    cfg.resid_pdrop = cfg.embd_pdrop = cfg.attn_pdrop = 0.0  # deterministic, as the built-ins
    model = GPT2LMHeadModel(cfg)
    targets = ["c_attn", "c_proj", "c_fc"]
    config = LoraConfig(r=8, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout)
    net = get_peft_model(model, config)
    for name, p in net.named_parameters():  # B is zero at init: make the update non-zero
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    return net


def _loss_and_grads(net, x):
    net.zero_grad()
    logits = net(input_ids=x).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def test_fused_lora_matches_peft_loss_and_gradients_and_is_undone():
    net = _peft_gpt2()
    x = torch.randint(0, 50, (3, 16))
    ref_loss, ref_grads = _loss_and_grads(net, x)
    restore = fuse_lora(net)
    fused_layers = [m for m in net.modules() if "forward" in vars(m)]
    assert len(fused_layers) == 2 * 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj per layer
    loss, grads = _loss_and_grads(net, x)
    # scaling 16 / 8 = 2 is exact: the same numbers, not only close ones
    assert torch.equal(loss, ref_loss)
    assert grads.keys() == ref_grads.keys() and len(grads) == 2 * 2 * 4
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-6, atol=1e-7)
    restore()
    assert not any("forward" in vars(m) for m in net.modules())
    assert torch.equal(_loss_and_grads(net, x)[0], ref_loss)


def test_fused_lora_with_an_inexact_scale_agrees_within_rounding():
    net = _peft_gpt2(alpha=13)  # scaling 13 / 8: not a power of two
    x = torch.randint(0, 50, (3, 16))
    ref_loss, _ = _loss_and_grads(net, x)
    fuse_lora(net)
    assert abs(_loss_and_grads(net, x)[0].item() - ref_loss.item()) < 1e-6


def test_fused_lora_falls_back_to_peft_where_not_plain():
    net = _peft_gpt2(dropout=0.5)  # dropout: PEFT's own forward, with its random mask
    layer = net.base_model.model.transformer.h[0].attn.c_attn
    x = torch.randn(2, 16, 32)
    torch.manual_seed(1)
    ref = layer(x)
    fuse_lora(net)
    torch.manual_seed(1)
    assert torch.equal(_fused_forward(layer, x), ref)
    with net.disable_adapter():  # adapters off: the base layer alone
        assert torch.equal(layer(x), layer.base_layer(x))


def test_fp32_evaluation_folds_the_update_into_the_weight_within_rounding():
    net = _peft_gpt2(alpha=13)  # an inexact scale: the merged path differs by rounding only
    layer = net.base_model.model.transformer.h[0].mlp.c_fc  # 32 -> 128
    fuse_lora(net)
    many, few = torch.randn(64, 32), torch.randn(3, 32)  # 64 x 160 > 32 x 128 > 3 x 160
    with torch.no_grad():
        merged = layer(many)
        unmerged = layer.base_layer(many) + layer.lora_B["default"](
            layer.lora_A["default"](many)
        ) * (13 / 8)
        torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-6)
        assert not torch.equal(merged, unmerged)  # another summation: the merged path ran
        few_out = layer(few)
    with torch.enable_grad():
        assert torch.equal(few_out, layer(few).detach())  # few rows: the unmerged forward
