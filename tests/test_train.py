"""One run: the loop, token-weighted evaluation, measurements, divergence, determinism."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from run_fixtures import load_tiny

from loraplace.data import Blocks
from loraplace.placement import resolve
from loraplace.runs import RunSpec, TrainSettings
from loraplace.train import evaluate, train_run
from loraplace.train.batching import batch_order as batches
from loraplace.train.loop import lr_at, total_steps
from loraplace.train.measure import flops_per_token
from loraplace.train.memory import LABELS

torch.set_num_threads(1)  # tiny model: threads only add contention on a shared machine


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("tiny"))


def _spec(model, placement="seed-full", kind="lora", seed=0, **train) -> RunSpec:
    settings = dict(steps=8, batch_size=4, block_size=16, lr=1e-2, warmup_steps=2, eval_every=4)
    settings.update(train)
    modules = resolve(placement, model, rank=2).as_dicts() if kind == "lora" else ()
    return RunSpec(
        study="t",
        placement_name=placement if kind == "lora" else kind,
        kind=kind,
        model="tiny",
        dataset="g",
        seed=seed,
        train=TrainSettings(**settings),
        modules=modules,
    )


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_evaluate_is_token_weighted_not_a_mean_of_batch_means(tiny):
    model, blocks = tiny
    val = blocks.val[:5]  # batches of 2, 2 and 1 block: unequal on purpose
    r = evaluate(model, val, batch_size=2)
    with torch.no_grad():
        logits = model(input_ids=val).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), val[:, 1:].flatten(), reduction="none"
        ).view(5, 15)
    assert r.tokens == 5 * 15
    assert r.loss == pytest.approx(float(nll.double().mean()), abs=1e-6)
    batch_means = [float(nll[i : i + 2].double().mean()) for i in (0, 2, 4)]
    assert r.mean_batch_ppl == pytest.approx(sum(math.exp(b) for b in batch_means) / 3, rel=1e-6)
    assert evaluate(model, val, batch_size=5).loss == pytest.approx(r.loss, abs=1e-6)


def test_an_eval_batch_runs_in_passes_that_change_no_number(tiny, monkeypatch):
    ev = importlib.import_module("loraplace.train.evaluate")  # the module, not the function
    model, blocks = tiny
    val = blocks.val[:5]
    whole = evaluate(model, val, batch_size=4)  # batches of 4 and 1 rows, one pass each
    assert ev.pass_rows(model, 16, 4) == 4
    monkeypatch.setattr(ev, "PASS_TOKENS", 2 * 16)  # now passes of 2 rows of 16 tokens
    assert ev.pass_rows(model, 16, 4) == 2
    split = evaluate(model, val, batch_size=4)
    assert split.tokens == whole.tokens == 5 * 15
    assert split.loss == pytest.approx(whole.loss, abs=1e-6)
    # the mean of batch perplexities is still over the 2 eval batches, not the 3 passes
    assert split.mean_batch_ppl == pytest.approx(whole.mean_batch_ppl, rel=1e-6)
    vocab = model.get_output_embeddings().weight.shape[0]
    monkeypatch.setattr(ev, "PASS_LOGITS_BYTES", 3 * 16 * vocab * 8)  # memory: 3 rows
    monkeypatch.setattr(ev, "PASS_TOKENS", 1 << 20)
    assert ev.pass_rows(model, 16, 64) == 3
    assert ev.pass_rows(model, 1 << 20, 64) == 1  # never below one row


@pytest.mark.parametrize(
    "step, schedule, expected",
    [
        (0, "cosine", 0.5),  # warm-up: (step + 1) / warmup_steps of the peak
        (1, "cosine", 1.0),
        (2, "cosine", 1.0),  # first step after warm-up: the peak
        (6, "cosine", 0.5),  # halfway through the decay
        (6, "linear", 0.5),
        (9, "constant", 1.0),
    ],
)
def test_lr_schedule(step, schedule, expected):
    t = TrainSettings(steps=10, lr=1.0, warmup_steps=2, schedule=schedule)
    assert lr_at(step, t, 10) == pytest.approx(expected)


def test_batches_cover_each_epoch_once_and_depend_on_seed():
    idx = list(batches(10, 3, 6, seed=0))
    assert [len(b) for b in idx] == [3] * 6
    first_epoch = torch.cat(idx[:3]).tolist()
    assert len(set(first_epoch)) == 9  # ragged tail dropped, no repeats within an epoch
    assert torch.equal(torch.cat(idx), torch.cat(list(batches(10, 3, 6, seed=0))))
    assert not torch.equal(torch.cat(idx), torch.cat(list(batches(10, 3, 6, seed=1))))
    assert total_steps(TrainSettings(epochs=1.5, batch_size=4), 10) == 4


def test_lora_run_trains_measures_and_restores_the_base_model(tiny):
    model, blocks = tiny
    before = _state(model)
    spec = _spec(model)
    r = train_run(spec, model, blocks)
    m = r.metrics
    assert r.status == "done"
    # Exact parameter accounting: PEFT's count equals the placement's from shapes alone.
    rp = resolve("seed-full", model, rank=2)
    assert (
        m["trainable_params"]
        == rp.trainable_params
        == 2 * 2 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))
    )
    assert m["total_params"] == rp.base_params == sum(p.numel() for p in model.parameters())
    assert m["trainable_pct"] == pytest.approx(rp.trainable_pct)
    assert m["eval_loss"] < m["zero_shot_loss"]  # 8 steps on a grammar: it learns
    assert m["eval_ppl"] == pytest.approx(math.exp(m["eval_loss"]))
    assert m["eval_tokens"] == blocks.val.shape[0] * 15
    assert (m["steps"], m["train_tokens"]) == (8, 8 * 4 * 16)
    assert m["tokens_per_s"] > 0 and m["train_time_s"] > 0
    assert m["peak_mem_bytes"] == m["rss_growth_bytes"] >= 0  # on CPU: the run's RSS growth
    assert 0 < m["mfu"] < 1
    assert [s for s, _ in r.curves["train_loss"]] == list(range(1, 9))
    assert [s for s, _ in r.curves["eval_loss"]] == [0, 4, 8]
    assert r.curves["eval_loss"][-1][1] == m["eval_loss"]
    assert r.manifest["precision"] == "fp32" and r.manifest["packages"]["torch"]
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert type(model.transformer.h[0].attn.c_attn).__name__ == "Conv1D"  # adapters gone


def test_same_spec_and_seed_give_identical_metrics(tiny):
    model, blocks = tiny
    timing = {"train_time_s", "eval_time_s", "tokens_per_s", "peak_mem_bytes", "mfu", *LABELS}
    a = train_run(_spec(model, seed=3), model, blocks)
    train_run(_spec(model, "seed-ffn", seed=1), model, blocks)  # another run in between
    b = train_run(_spec(model, seed=3), model, blocks)
    strip = lambda r: {k: v for k, v in r.metrics.items() if k not in timing}  # noqa: E731
    assert strip(a) == strip(b)
    assert a.curves["train_loss"] == b.curves["train_loss"]
    c = train_run(_spec(model, seed=4), model, blocks)
    assert c.metrics["eval_loss"] != a.metrics["eval_loss"]


def test_zero_shot_and_full_finetuning(tiny):
    model, blocks = tiny
    before = _state(model)
    z = train_run(_spec(model, kind="zero-shot"), model, blocks)
    assert z.status == "done"
    assert z.metrics["eval_loss"] == z.metrics["zero_shot_loss"]
    assert (z.metrics["trainable_params"], z.metrics["steps"], z.metrics["train_time_s"]) == (
        0,
        0,
        0,
    )
    f = train_run(_spec(model, kind="full", lr=1e-3), model, blocks)
    assert f.metrics["trainable_params"] == f.metrics["total_params"]
    assert f.metrics["trainable_pct"] == 100.0
    assert f.metrics["eval_loss"] < f.metrics["zero_shot_loss"]
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # base weights restored


def test_huge_learning_rate_is_marked_diverged_with_its_step(tiny):
    model, blocks = tiny
    before = _state(model)
    r = train_run(_spec(model, lr=1e30, warmup_steps=0, grad_clip=0.0), model, blocks)
    assert r.status == "diverged"
    assert 1 < r.diverged_step <= 8
    assert r.metrics == {}  # never a number in the results
    assert all(math.isfinite(v) for _, v in r.curves["train_loss"])
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


class _Rising(torch.nn.Module):
    """A fake LM whose loss grows with every training forward pass (for the factor rule)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.0))
        self.calls = 0

    def forward(self, input_ids):
        from types import SimpleNamespace

        if self.training:
            self.calls += 1
        wrong = torch.nn.functional.one_hot((input_ids + 1) % 8, 8).float()
        return SimpleNamespace(logits=(self.calls + self.scale) * wrong)


def test_loss_above_factor_times_initial_is_divergence():
    model = _Rising()
    data = torch.zeros(8, 4, dtype=torch.long)  # target 0, the model favours 1 ever more
    blocks = Blocks(name="z", train=data, val=data, fingerprint="z", n_docs=1, n_tokens=32)
    spec = RunSpec(
        study="t",
        placement_name="full",
        kind="full",
        model="fake",
        dataset="z",
        seed=0,
        train=TrainSettings(
            steps=50, batch_size=2, block_size=4, lr=1.0, warmup_steps=0, diverge_factor=2.0
        ),
    )
    r = train_run(spec, model, blocks, peak_flops=1e9)
    first = r.curves["train_loss"][0][1]
    assert r.status == "diverged"
    assert all(v <= 2 * first for _, v in r.curves["train_loss"])
    assert r.diverged_step == len(r.curves["train_loss"]) + 1


def test_flops_per_token_counts_matmuls_and_the_tied_head(tiny):
    model, _ = tiny
    # 2 layers x (c_attn 32x96 + c_proj 32x32 + c_fc 32x128 + c_proj 128x32) + lm_head 32x18
    n = 2 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32) + 32 * model.config.vocab_size
    attn = 4 * 2 * 32 * 16
    assert flops_per_token(model, 16, full=True) == 3 * (2 * n + attn)
    assert flops_per_token(model, 16) == 2 * (2 * n + attn)  # nothing trainable: no weight grads


def test_a_lora_run_trains_through_the_fused_lora_forward_and_leaves_none_behind(tiny):
    from loraplace.train.inject import adapted

    model, _ = tiny
    spec = _spec(model, "seed-full")
    with adapted(model, spec) as net:
        lora = [m for m in net.modules() if type(m).__name__ == "Linear" and hasattr(m, "lora_A")]
        fused = [m for m in lora if "forward" in vars(m)]  # the per-run fused forward
        assert len(lora) == len(spec.modules) > 0 and len(fused) == len(lora)
    with adapted(model, spec, fused_kernels=False) as net:
        assert not any("forward" in vars(m) for m in net.modules())
    assert not any("forward" in vars(m) for m in model.modules())
