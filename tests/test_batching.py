"""Batches of instruction data: length-grouped epochs, trimmed widths, honest token counts."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from run_fixtures import write_tiny_model

from loraplace.data import load_blocks
from loraplace.data.sft import DataSettings
from loraplace.placement import resolve
from loraplace.runs import RunSpec, TrainSettings
from loraplace.train import evaluate, train_run
from loraplace.train.batching import (
    GROUPED_BATCHING,
    RAW_BATCHING,
    batch_order,
    batch_tokens,
    row_widths,
    trimmed,
)

torch.set_num_threads(1)

WIDTHS = torch.tensor([5, 9, 2, 7, 7, 3, 9, 4, 6, 8, 2, 5, 3, 7, 6, 4, 9, 2, 8, 5, 3, 6, 7])


def _epochs(seed: int, steps: int = 18) -> list[list[int]]:
    return [b.tolist() for b in batch_order(len(WIDTHS), 4, steps, seed, WIDTHS)]


def test_grouped_batches_are_seeded_deterministic_and_cover_each_example_once_per_epoch():
    a, b, other = _epochs(0), _epochs(0), _epochs(1)
    assert a == b and a != other
    # 23 examples in batches of 4: 6 batches an epoch (one of 3 rows), 3 epochs in 18 steps.
    for e in range(3):
        epoch = a[6 * e : 6 * e + 6]
        assert sorted(len(x) for x in epoch) == [3, 4, 4, 4, 4, 4]
        assert sorted(i for x in epoch for i in x) == list(range(23))
    assert a[:6] != a[6:12]  # each epoch reshuffled
    # One window (23 < 4 x 50): the batches are consecutive runs of the sorted widths.
    by_width = sorted(WIDTHS.tolist(), reverse=True)
    runs = sorted(sorted(WIDTHS[x].tolist()) for x in a[:6])
    assert runs == sorted(sorted(by_width[i : i + 4]) for i in range(0, 23, 4))


def test_raw_text_batches_are_unchanged_full_batches():
    got = [b.tolist() for b in batch_order(10, 3, 4, seed=0)]
    g = torch.Generator().manual_seed(0)
    first, second = torch.randperm(10, generator=g), torch.randperm(10, generator=g)
    assert got == [
        first[0:3].tolist(),
        first[3:6].tolist(),
        first[6:9].tolist(),
        second[:3].tolist(),
    ]


def test_trimmed_keeps_the_columns_through_the_last_scored_target():
    rows = torch.arange(2 * 8).view(2, 8)
    scored = torch.zeros(2, 7, dtype=torch.bool)
    scored[0, 2] = scored[1, 4] = True  # targets at positions 3 and 5
    x, mask = trimmed(rows, scored)
    assert x.tolist() == rows[:, :6].tolist() and mask.shape == (2, 5)
    assert row_widths(scored).tolist() == [4, 6]
    # Rows of 6 and 3 real tokens, as 2 micro-batches of one row: 4 + 3 processed.
    assert batch_tokens(rows, scored, torch.tensor([6, 3]), grad_accum=2) == (4 + 3, 2)
    assert batch_tokens(rows, scored, torch.tensor([6, 3]), grad_accum=1) == (6 + 3, 2)
    assert batch_tokens(rows, None, None, grad_accum=1) == (16, 14)


# --- a small SFT run, counted by hand ---------------------------------------------------

# prompt | completion | EOS; word-level tokens (run_fixtures' vocabulary)
ROWS = [
    {"prompt": "the cat sees", "completion": " the moon ."},  # 3 + 3 + 1 = 7 tokens, 4 scored
    {"prompt": "a dog", "completion": " eats ."},  # 2 + 2 + 1 = 5 tokens, 3 scored
    {"prompt": "my bird", "completion": " finds some seed ."},  # 2 + 4 + 1 = 7, 5 scored
    {"prompt": "the fox chases the hen", "completion": " ."},  # 5 + 1 + 1 = 7, 2 scored
    {"prompt": "her fish", "completion": " hears ."},  # 2 + 2 + 1 = 5, 3 scored
    {"prompt": "our cow likes", "completion": " a worm ."},  # 3 + 3 + 1 = 7, 4 scored
]
# prompt -> (tokens, scored targets), counted by hand from the rows above
HAND = {
    "the cat sees": (7, 4),
    "a dog": (5, 3),
    "my bird": (7, 5),
    "the fox chases the hen": (7, 2),
    "her fish": (5, 3),
    "our cow likes": (7, 4),
}


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("sft")
    mp = pytest.MonkeyPatch()
    mp.setenv("LORAPLACE_CACHE", str(root / "cache"))
    model_dir = write_tiny_model(root / "m")
    tok = AutoTokenizer.from_pretrained(model_dir)
    path = root / "pc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 2))  # 12 examples
    blocks = load_blocks(str(path), tok, 16, data=DataSettings(val_fraction=0.25))
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    for p in model.parameters():
        p.requires_grad_(False)
    yield model, blocks, tok
    mp.undo()


def _spec(model, **train) -> RunSpec:
    settings = dict(epochs=1, steps=1, batch_size=4, block_size=16, lr=1e-2, warmup_steps=0)
    settings.update(train)
    return RunSpec(
        study="t",
        placement_name="attn",
        kind="lora",
        model="tiny",
        dataset="pc",
        seed=0,
        train=TrainSettings(**settings),
        modules=resolve("attn", model, rank=2).as_dicts(),
    )


def test_token_counts_of_an_sft_run_match_a_hand_count(sft):
    model, blocks, tok = sft
    # The rows are padded to the longest example (7); 9 train examples, 3 val.
    assert blocks.info["row_length"] == 7 and blocks.train.shape == (9, 7)
    hand = [HAND[tok.decode(e["prompt_ids"])] for e in blocks.train_examples]
    r = train_run(_spec(model), model, blocks, prefix_cache=False)
    m = r.metrics
    # One epoch over the 9 train examples in batches of 4, 4 and 1: each example once.
    assert m["steps"] == 3
    assert m["train_tokens"] == sum(n for n, _ in hand)  # not 3 x 4 x 16 = 192, nor 9 x 7
    assert m["train_scored_tokens"] == sum(s for _, s in hand)
    assert m["tokens_per_s"] == pytest.approx(m["train_tokens"] / m["train_time_s"])
    assert r.manifest["batching"] == GROUPED_BATCHING
    assert blocks.train_lengths.tolist() == [n for n, _ in hand]


def test_trimmed_eval_equals_the_full_width_eval(sft):
    model, blocks, _ = sft
    scored = blocks.scored("val")
    ours = evaluate(model, blocks.val, batch_size=2, scored=scored)
    with torch.no_grad():  # transformers' own loss over every column of the padded rows
        theirs = model(input_ids=blocks.val, labels=blocks.val_labels).loss.item()
    assert ours.tokens == int(scored.sum())
    assert ours.loss == pytest.approx(theirs, abs=1e-6)


def test_raw_text_runs_record_their_batching(tmp_path):
    from run_fixtures import load_tiny

    model, blocks = load_tiny(tmp_path)
    spec = _spec(model, epochs=None, steps=2, batch_size=2)
    r = train_run(spec, model, blocks, prefix_cache=False)
    assert r.manifest["batching"] == RAW_BATCHING
    assert (r.metrics["train_tokens"], r.metrics["train_scored_tokens"]) == (2 * 2 * 16, 2 * 2 * 15)


def test_cached_instruction_blocks_without_lengths_are_rebuilt(sft, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    from loraplace.data import cache

    _, blocks, _ = sft
    monkeypatch.setenv("LORAPLACE_CACHE", str(tmp_path))
    entry = cache.store(blocks)
    assert cache.load_cached(blocks.fingerprint, "x").train_lengths.tolist() == (
        blocks.train_lengths.tolist()
    )
    old = {k: v for k, v in load_file(entry / "blocks.safetensors").items() if "length" not in k}
    save_file(old, entry / "blocks.safetensors")  # an entry written before lengths were kept
    assert cache.load_cached(blocks.fingerprint, "x") is None


def test_an_sft_run_through_the_prefix_cache_gives_the_plain_numbers(sft):
    from loraplace.train.prefix_cache import PrefixCache

    model, blocks, _ = sft
    spec = _spec(model, epochs=2)
    top = resolve("seed-full", model, rank=2, layers="last:1").as_dicts()  # layer 0 frozen
    spec = dataclasses.replace(spec, modules=top, placement_name="top")
    plain = train_run(spec, model, blocks, prefix_cache=False)
    cache = PrefixCache()
    cached = train_run(spec, model, blocks, prefix_cache=cache)
    assert cached.manifest["prefix_layers_cached"] == 1 and cache.hits > 0
    assert cached.metrics["eval_loss"] == pytest.approx(plain.metrics["eval_loss"], abs=1e-6)
    assert cached.metrics["train_tokens"] == plain.metrics["train_tokens"]
