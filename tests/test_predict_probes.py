"""Probe predictors and PLoP: NFN by hand on a small model, and the placement scores."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from loraplace.predict import Candidate
from loraplace.predict.probes import plop_scores, score_sum, type_nfn
from loraplace.probe import pick_batches, probe_model

V, L = 50, 16
ROLE_OF = {"attn.c_attn": "attn.qkv", "attn.c_proj": "attn.o", "mlp.c_fc": "mlp.up"}
ROLE_OF["mlp.c_proj"] = "mlp.down"


def _model() -> GPT2LMHeadModel:
    torch.manual_seed(3)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=V, n_positions=32)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # unequal scales per module: PLoP's ratio must not see them
        model.transformer.h[0].mlp.c_proj.weight.mul_(7.0)
        model.transformer.h[1].attn.c_attn.weight.mul_(0.1)
    return model


@pytest.fixture(scope="module")
def batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    blocks = (torch.arange(L).repeat(20, 1) * 3) % 11 + torch.randint(0, 3, (20, L), generator=g)
    return pick_batches(blocks, batches=2, batch_size=5, seed=0)


def hand_nfn(model: GPT2LMHeadModel, batches) -> dict[str, float]:
    """role -> mean over layers of NFN = mean_t |W z_t| / |z_t|, over sqrt(|W|_F^2 / in)."""
    inputs: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for layer, block in enumerate(model.transformer.h):
        for suffix in ROLE_OF:
            mod = block.get_submodule(suffix)
            key = f"{layer}.{suffix}"
            hooks.append(
                mod.register_forward_hook(
                    lambda m, i, o, key=key: inputs.setdefault(key, []).append(i[0])
                )
            )
    with torch.no_grad():
        for b in batches:
            model(input_ids=b)
    for h in hooks:
        h.remove()
    per_role: dict[str, list[float]] = {}
    for key, zs in inputs.items():
        layer, suffix = key.split(".", 1)
        w = model.transformer.h[int(layer)].get_submodule(suffix).weight.detach()  # [in, out]
        z = torch.cat([x.reshape(-1, x.shape[-1]) for x in zs])  # every probe token
        actual = torch.stack([(zt @ w).norm() / zt.norm() for zt in z]).mean()
        random = math.sqrt(float((w * w).sum()) / w.shape[0])  # E|W u| for unit u, squared
        per_role.setdefault(ROLE_OF[suffix], []).append(float(actual) / random)
    return {r: sum(v) / len(v) for r, v in per_role.items()}


def test_plop_ranks_module_types_as_the_hand_computation(batches):
    model = _model()
    result = probe_model(model, batches, gradients=False)
    assert set(result.scores) == {"nfn", "out_norm"}  # forward only: no gradient scores
    by_hand = hand_nfn(model, batches)
    nfn = type_nfn(result)
    assert nfn == pytest.approx(by_hand, rel=1e-5)
    assert sorted(nfn, key=nfn.get) == sorted(by_hand, key=by_hand.get)
    # scaling a weight leaves its NFN as it was (the ratio is scale-free)
    assert result.scores["nfn"][(0, "mlp.down")] == pytest.approx(
        probe_model(_model_unscaled(), batches, gradients=False).scores["nfn"][(0, "mlp.down")],
        rel=1e-5,
    )


def _model_unscaled() -> GPT2LMHeadModel:
    model = _model()
    with torch.no_grad():
        model.transformer.h[0].mlp.c_proj.weight.div_(7.0)
    return model


def test_random_baseline_matches_the_official_codes_gaussian_inputs():
    """PLoP's code draws Gaussian inputs, normalised; the expectation is |W|_F / sqrt(in)."""
    torch.manual_seed(0)
    w = torch.randn(64, 256) * torch.linspace(0.1, 2.0, 256)  # [in, out], uneven columns
    u = torch.randn(20000, 64)
    u = u / u.norm(dim=1, keepdim=True)
    monte_carlo = float((u @ w).norm(dim=1).mean())
    assert monte_carlo == pytest.approx(math.sqrt(float((w * w).sum()) / 64), rel=0.01)


def _mod(layer: int, role: str, rank: int, fin: int, fout: int) -> dict:
    return {
        "name": f"transformer.h.{layer}.{role}",
        "role": role,
        "layer": layer,
        "rank": rank,
        "in_features": fin,
        "out_features": fout,
    }


def test_plop_scores_weight_types_by_the_parameters_spent():
    nfn = {"attn.o": 0.5, "mlp.down": 1.0, "attn.qkv": 2.0}
    x = Candidate("x", (_mod(0, "attn.o", 2, 32, 32), _mod(0, "mlp.down", 1, 128, 32)))
    y = Candidate("y", (_mod(1, "attn.qkv", 1, 32, 96),))
    scores = plop_scores(nfn, [x, y])
    # x spends 2 x 64 = 128 params at NFN 0.5 and 160 at 1.0
    assert scores["x"] == pytest.approx(-(128 * 0.5 + 160 * 1.0) / 288)
    assert scores["y"] == -2.0
    assert score_sum({(0, "attn.o"): 1.5, (0, "mlp.down"): 0.25}, [x, y]) == {"x": 1.75, "y": 0.0}
