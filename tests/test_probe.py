"""Importance probes: deterministic, finite, the LoRA-gradient score checked against PEFT."""

import json
import math

import pytest
import torch
from peft import get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

from loraplace.budget import allocate
from loraplace.errors import UserError
from loraplace.placement import lora_config, resolve
from loraplace.probe import SCORES, ProbeResult, pick_batches, probe_model
from loraplace.probe.panels import heatmap

V, L = 50, 16  # vocabulary and block length of the test data


def _model(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=V, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(cfg)


@pytest.fixture(scope="module")
def blocks() -> torch.Tensor:
    # A repeating pattern with noise: the loss has something to say about every module.
    g = torch.Generator().manual_seed(1)
    base = torch.arange(L).repeat(24, 1) % 7
    return torch.where(
        torch.rand(24, L, generator=g) < 0.3, torch.randint(0, V, (24, L), generator=g), base
    )


@pytest.fixture(scope="module")
def result(blocks) -> ProbeResult:
    return probe_model(_model(), pick_batches(blocks, batches=2, batch_size=4, seed=0))


def test_pick_batches_is_seeded(blocks):
    a = pick_batches(blocks, batches=3, batch_size=4, seed=0)
    b = pick_batches(blocks, batches=3, batch_size=4, seed=0)
    c = pick_batches(blocks, batches=3, batch_size=4, seed=1)
    assert [x.shape for x in a] == [(4, L)] * 3
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    # fewer blocks than asked for: every block once, last batch short
    assert [x.shape[0] for x in pick_batches(blocks[:6], batches=2, batch_size=4, seed=0)] == [4, 2]
    with pytest.raises(UserError):
        pick_batches(blocks[:0], batches=2, batch_size=4, seed=0)


def test_probe_is_deterministic_for_a_seed(blocks, result):
    again = probe_model(_model(), pick_batches(blocks, batches=2, batch_size=4, seed=0))
    assert again.scores == result.scores  # bit for bit
    other = probe_model(_model(), pick_batches(blocks, batches=2, batch_size=4, seed=5))
    assert other.scores["taylor"] != result.scores["taylor"]


def test_scores_cover_every_layer_and_role(result):
    assert set(result.scores) == set(SCORES)
    keys = [
        (layer, role) for layer in (0, 1) for role in ("attn.qkv", "attn.o", "mlp.up", "mlp.down")
    ]
    assert result.keys == keys
    for values in result.scores.values():
        assert set(values) == set(keys)
        assert all(math.isfinite(v) and v > 0 for v in values.values())
    assert result.modules[(1, "attn.qkv")] == ["transformer.h.1.attn.c_attn"]  # fused qkv
    assert result.weight_params[(0, "mlp.up")] == 32 * 128
    assert result.lora_params_per_rank[(0, "attn.qkv")] == 32 + 96
    assert result.meta["tokens"] == 8 * L and result.meta["batches"] == 2


def test_probe_leaves_the_model_as_it_found_it(blocks):
    model = _model()
    model.train()
    model.lm_head.weight.requires_grad_(False)  # tied to wte: both frozen
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    probe_model(model, pick_batches(blocks, batches=1, batch_size=4, seed=0))
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert not model.transformer.wte.weight.requires_grad
    assert model.transformer.h[0].attn.c_attn.weight.requires_grad
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_lora_grad_is_the_gradient_a_fresh_lora_b_receives(blocks, result):
    """E|dL/dB| = sqrt(r) x score: check against PEFT's own B gradient at rank 32."""
    model = _model()
    rp = resolve("all-linear", model, rank=32, alpha=32)  # alpha/r = 1: no extra scale
    torch.manual_seed(0)
    peft_model = get_peft_model(model, lora_config(rp.modules))
    peft_model.eval()
    batches = pick_batches(blocks, batches=2, batch_size=4, seed=0)
    for ids in batches:
        (peft_model(input_ids=ids, labels=ids).loss / len(batches)).backward()
    for name, p in peft_model.named_parameters():
        if "lora_B" not in name:
            continue
        key = next(k for k, mods in result.modules.items() if mods[0] + ".lora_B" in name)
        measured = p.grad.norm().item() / math.sqrt(32)
        assert measured == pytest.approx(result.scores["lora_grad"][key], rel=0.3)


def test_nfn_and_out_norm_by_hand(blocks, result):
    model = _model().eval()  # GPT-2's default dropout is on in train mode
    batches = pick_batches(blocks, batches=2, batch_size=4, seed=0)
    mod = model.transformer.h[1].mlp.c_fc  # Conv1D 32 -> 128
    seen = []
    h = mod.register_forward_hook(lambda m, i, o: seen.append((i[0].detach(), o.detach())))
    with torch.no_grad():
        for ids in batches:
            model(input_ids=ids)
    h.remove()
    wz_sq = sum(float(((o - mod.bias.detach()) ** 2).sum()) for _, o in seen)
    # PLoP's NFN: per token |W z^| for the unit input z^, over the random |W u|, whose
    # square is |W|_F^2 / in in expectation; the mean over the 8 x L tokens.
    w = mod.weight.detach()  # Conv1D: [in, out]
    unit = [
        float((z[b, t] @ w).norm() / z[b, t].norm())
        for z, _ in seen
        for b in range(z.shape[0])
        for t in range(z.shape[1])
    ]
    rand = math.sqrt(float((w**2).sum()) / 32)
    assert len(unit) == 8 * L
    assert result.scores["nfn"][(1, "mlp.up")] == pytest.approx(
        sum(unit) / len(unit) / rand, rel=1e-5
    )
    assert result.scores["out_norm"][(1, "mlp.up")] == pytest.approx(
        math.sqrt(wz_sq / (8 * L * 128)), rel=1e-5
    )


def test_summaries_frame_and_json_round_trip(result, tmp_path):
    df = result.to_frame()
    assert len(df) == len(SCORES) * 8
    assert list(df.columns[:4]) == ["score", "layer", "role", "value"]
    summary = result.role_summary("taylor")
    assert summary["attn.o"] == pytest.approx(
        (result.scores["taylor"][(0, "attn.o")] + result.scores["taylor"][(1, "attn.o")]) / 2
    )
    per_lora = result.role_summary("taylor", per="lora")
    assert per_lora["mlp.up"] == pytest.approx(
        sum(result.scores["taylor"][(layer, "mlp.up")] / (32 + 128) for layer in (0, 1)) / 2
    )
    per_weight = result.role_summary("taylor", per="weight")
    assert per_weight["attn.qkv"] == pytest.approx(summary["attn.qkv"] / (32 * 96))
    ranking = result.role_ranking("nfn")  # low nfn first
    nfn = result.role_summary("nfn")
    assert [nfn[r] for r in ranking] == sorted(nfn.values())
    assert result.importance("nfn")[(0, "attn.o")] == 1 / result.scores["nfn"][(0, "attn.o")]
    doc = json.loads(json.dumps(result.to_json()))
    back = ProbeResult.from_json(doc)
    assert back.scores == result.scores and back.modules == result.modules
    assert doc["orientation"]["nfn"] == "lower"
    with pytest.raises(UserError, match="unknown score"):
        result.grid("fisher")
    with pytest.raises(UserError, match="unknown normalisation"):
        result.role_summary("taylor", per="token")


def test_heatmap_writes_a_png(result, tmp_path):
    path = heatmap(result, tmp_path / "sub" / "probe.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_allocation_from_probe_scores(result):
    model = _model()
    budget = resolve("seed-ffn", model, rank=8).trainable_params
    for name in SCORES:
        a = allocate(result.importance(name), model, budget)
        assert 0 < a.achieved <= budget


def test_cli_probe(tmp_path):
    pytest.importorskip("loraplace.models")
    from run_fixtures import write_text, write_tiny_model

    from loraplace.cli import run_cli

    model_dir = write_tiny_model(tmp_path / "model")
    text = write_text(tmp_path / "text.txt")
    out = tmp_path / "out"
    argv = ["probe", str(model_dir), str(text), "--batches", "2", "--batch-size", "2"]
    argv += ["--block-size", "16", "--out", str(out), "--json"]
    assert run_cli(argv) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["probe_model_text.txt_s0.json", "probe_model_text.txt_s0.png"]
    doc = json.loads((out / files[0]).read_text())
    assert doc["meta"]["tokens"] == 2 * 2 * 16
    assert set(doc["scores"]) == set(SCORES)
    assert run_cli([*argv[:-1]]) == 0  # the rich tables
    assert run_cli(["probe", str(model_dir), str(text), "--batches", "0"]) == 2


def test_cli_probe_tables_and_files(result, tmp_path, monkeypatch, capsys):
    """The verb's output, with the library call stubbed (no model loading)."""
    import loraplace.probe
    from loraplace.cli import run_cli

    calls = []

    def fake_probe(model, data, **kw):
        calls.append((model, data, kw))
        return result

    monkeypatch.setattr(loraplace.probe, "probe", fake_probe)
    out = tmp_path / "out"
    argv = ["probe", "tiny-markov", "markov-copy", "--batches", "3", "--seed", "7", "-o", str(out)]
    assert run_cli([*argv, "--json"]) == 0
    assert calls[0][2]["batches"] == 3 and calls[0][2]["seed"] == 7
    doc = json.loads(capsys.readouterr().out)
    assert doc["role_ranking"]["taylor"] == result.role_ranking("taylor")
    assert doc["files"]["heatmap"].endswith("probe_tiny-markov_markov-copy_s7.png")
    assert sorted(p.name for p in out.iterdir()) == [
        "probe_tiny-markov_markov-copy_s7.json",
        "probe_tiny-markov_markov-copy_s7.png",
    ]
    assert run_cli(argv) == 0
    text = capsys.readouterr().out
    assert "mean / LoRA param" in text and "nfn:" in text and "role order" in text
