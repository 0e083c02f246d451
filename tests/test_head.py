"""Logits only where scored (train/head.py): the same NLL as the full logits, less head work."""

import warnings

import pytest
import torch
from families import FAMILIES, V
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaForCausalLM

from loraplace.train.evaluate import token_nll
from loraplace.train.head import head_split


def _gemma() -> Gemma3TextConfig:
    return Gemma3TextConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        vocab_size=V,
        final_logit_softcapping=3.0,  # small, so that the cap bends these logits
        pad_token_id=0,
    )


CONFIGS = {
    "gpt2": FAMILIES["gpt2"],  # tied embeddings (GPT-2's default)
    "llama": FAMILIES["llama"],
    "llama-tied": lambda: FAMILIES["llama"]().__class__(
        **{**FAMILIES["llama"]().to_dict(), "tie_word_embeddings": True}
    ),
    "gemma3-softcap": _gemma,
}


def _model(name: str, peft: bool):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIGS[name]())
    with torch.no_grad():  # logits far enough apart that a missing cap would show
        for p in model.parameters():
            p.mul_(8.0)
    if peft:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lora = LoraConfig(r=2, target_modules="all-linear", init_lora_weights=False)
            model = get_peft_model(model, lora)
    return model.eval()


def _reference(model, x: torch.Tensor) -> torch.Tensor:
    """Per-token NLL [B, L-1] from the model's own full logits."""
    logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()
    nll = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), x[:, 1:].flatten(), reduction="none"
    )
    return nll.view(x.shape[0], -1)


def _batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(1, V, (3, 12), generator=g)
    scored = torch.zeros(3, 11, dtype=torch.bool)  # completion-only: a few targets a row
    scored[0, 8:] = True
    scored[1, 4:6] = True
    scored[2, 10] = True
    return x, scored


@pytest.mark.parametrize("peft", [False, True])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_scored_logits_equal_the_full_logits_loss(name, peft):
    model = _model(name, peft)
    assert head_split(model, {"use_cache": False}) is not None  # the split path is used
    x, scored = _batch()
    with torch.no_grad():
        ref = _reference(model, x)
        raw = token_nll(model, x)
        part = token_nll(model, x, scored)
    assert (raw - ref).abs().max().item() < 1e-6  # raw text: every target
    assert (part[scored] - ref[scored]).abs().max().item() < 1e-6  # the completion
    assert torch.equal(part[~scored], torch.zeros(int((~scored).sum())))
    assert abs(part.sum().item() / scored.sum().item() - ref[scored].mean().item()) < 1e-6


def test_the_head_runs_only_on_scored_rows_and_gradients_match():
    model = _model("llama", peft=True)
    x, scored = _batch()
    assert head_split(model, {"use_cache": False}) is not None  # its one-off check done
    rows: list[int] = []
    head = model.get_base_model().lm_head
    hook = head.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    model.train()
    token_nll(model, x, scored).sum().backward()
    hook.remove()
    assert rows == [int(scored.sum())] == [6]  # 6 rows through the head, not 3 x 11
    fast = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    _reference(model, x)[scored].sum().backward()
    slow = [p.grad for p in model.parameters() if p.requires_grad]
    for a, b in zip(fast, slow, strict=True):  # fp32 rounding apart (weights are x8 here)
        assert (a - b).abs().max().item() <= 1e-4 * b.abs().max().item()


class _ScaledLlama(LlamaForCausalLM):
    """A model whose forward does more than body then head: its logits are doubled."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = out.logits * 2.0
        return out


def test_a_model_whose_forward_scales_logits_keeps_its_own_forward():
    torch.manual_seed(0)
    model = _ScaledLlama(FAMILIES["llama"]()).eval()
    assert head_split(model, {"use_cache": False}) is None
    x, scored = _batch()
    with torch.no_grad():
        got = token_nll(model, x, scored)
        ref = _reference(model, x)
    assert (got[scored] - ref[scored]).abs().max().item() < 1e-6
    assert torch.equal(got[~scored], torch.zeros(int((~scored).sum())))
