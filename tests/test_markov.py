"""The synthetic benchmark: generator, oracle and floor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loraplace.builtin import markov
from loraplace.builtin.markov import (
    COPY_ID,
    MARKOV_DATASETS,
    VOCAB,
    VOCAB_SIZE,
    MarkovParams,
    Process,
    markov_blocks,
    oracle_nll,
    retain_dataset_for,
)
from loraplace.errors import UserError


def test_oracle_nll_equals_analytic_entropy_rate():
    """On a small chain without markers, the oracle's mean NLL is the entropy rate (1 %)."""
    params = MarkovParams(n_content=8, p_copy=0.0)
    rng = np.random.default_rng(7)
    P = rng.dirichlet(np.full(8, 0.5), size=8)
    pi = markov.stationary(P)
    proc = Process("small", P, copy_back=4, task_id=VOCAB["<src>"])
    x, nll = markov.sample([proc], np.zeros(2000, dtype=np.int64), 512, rng, params, init=pi)
    rate = markov.entropy_rate(P)
    assert (x[:, 1:] < 8).all()  # no markers when p_copy = 0
    assert nll.mean() == pytest.approx(rate, rel=0.01)
    assert 0.5 < rate < np.log(8)  # a real chain: neither deterministic nor uniform


@pytest.mark.parametrize("name", MARKOV_DATASETS)
def test_generated_nll_is_the_oracle_of_the_tokens(name):
    """The NLL recorded while sampling equals the oracle recomputed from the tokens alone."""
    blocks = markov_blocks(name, 64, n_train=8, n_val=64)
    recomputed = oracle_nll(blocks.val.numpy())
    np.testing.assert_allclose(recomputed, blocks.val_oracle_nll.numpy(), rtol=0, atol=1e-12)
    assert blocks.val_oracle_nll.dtype == torch.float64
    assert blocks.val_oracle_nll.shape == (64, 63)
    assert np.isfinite(recomputed).all()


@pytest.mark.parametrize("task", ["<src>", "<lex>", "<trn>", "<cpy>"])
def test_oracle_probabilities_sum_to_one(task):
    """At every position the oracle's distribution over the whole vocabulary sums to 1."""
    name = {"<src>": "markov-source", "<lex>": "markov-lexical"}.get(task, "markov-mix")
    x = markov_blocks(name, 48, n_train=1, n_val=64).val.numpy()
    x = x[x[:, 0] == VOCAB[task]][:4]
    assert len(x) > 0
    for t in range(1, 48):
        # Every candidate token at position t, with the true prefix before it.
        cand = np.repeat(x, VOCAB_SIZE, axis=0)
        cand[:, t] = np.tile(np.arange(VOCAB_SIZE), len(x))
        p = np.exp(-oracle_nll(cand[:, : t + 1])[:, t - 1]).reshape(len(x), VOCAB_SIZE)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)


def test_same_seed_same_blocks_and_splits_are_independent():
    a = markov_blocks("markov-mix", 32, n_train=16, n_val=8, data_seed=3)
    b = markov_blocks("markov-mix", 32, n_train=16, n_val=8, data_seed=3)
    c = markov_blocks("markov-mix", 32, n_train=16, n_val=8, data_seed=4)
    d = markov_blocks("markov-mix", 32, n_train=99, n_val=8, data_seed=3)
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert torch.equal(a.val_oracle_nll, b.val_oracle_nll) and a.fingerprint == b.fingerprint
    assert not torch.equal(a.val, c.val) and a.fingerprint != c.fingerprint
    assert torch.equal(a.val, d.val)  # val never depends on the size of train
    assert not torch.equal(a.train, a.val[:8].repeat(2, 1))


def test_blocks_layout():
    b = markov_blocks("markov-mix", 128, n_train=40, n_val=20)
    assert b.train.shape == (40, 128) and b.val.shape == (20, 128)
    assert b.train.dtype == torch.int64
    assert (b.n_docs, b.n_tokens, b.block_size) == (60, 60 * 128, 128)
    # One document per block: a task token at position 0 and never again.
    tasks = {VOCAB["<lex>"], VOCAB["<trn>"], VOCAB["<cpy>"]}
    assert set(b.train[:, 0].tolist()) == tasks
    assert int(torch.isin(b.train[:, 1:], torch.tensor(sorted(tasks))).sum()) == 0
    assert b.info["processes"] == ["lexical", "transition", "copy"]
    assert b.floor == pytest.approx(float(b.val_oracle_nll.mean()))


def _copies(x: np.ndarray, copy_back: int, copy_len: int = 4) -> int:
    """Count markers whose following tokens copy x[m - copy_back + j]; assert no others."""
    n = 0
    for row in x:
        for m in np.flatnonzero(row == COPY_ID):
            span = row[m + 1 : m + 1 + copy_len]
            assert (span == row[m - copy_back : m - copy_back + len(span)]).all()
            n += 1
    return n


@pytest.mark.parametrize(
    "name, copy_back", [("markov-source", 4), ("markov-transition", 4), ("markov-copy", 8)]
)
def test_copy_rule(name, copy_back):
    x = markov_blocks(name, 128, n_train=1, n_val=64).val.numpy()
    assert _copies(x, copy_back) > 64 * 4  # several markers per block


def test_targets_differ_from_source_as_documented():
    w = markov.world()
    src, lex, trn, cpy = (w[k].P for k in ("source", "lexical", "transition", "copy"))
    changed_rows = np.flatnonzero(np.abs(trn - src).sum(axis=1) > 0)
    assert len(changed_rows) == 16  # 25 % of 64 contexts
    np.testing.assert_array_equal(cpy, src)  # the copy target changes only the copy rule
    # Lexical: the relabelled chain has the same rows up to a permutation of 16 tokens.
    moved = [i for i in range(64) if not np.allclose(lex[i], src[i])]
    assert len(moved) >= 16
    assert markov.entropy_rate(lex) == pytest.approx(markov.entropy_rate(src), rel=1e-9)


@pytest.mark.parametrize(
    "name, retain",
    [
        ("markov-source", None),
        ("markov-lexical", "markov-source"),
        ("markov-transition", "markov-source"),
        ("markov-copy", "markov-source"),
        ("markov-mix", "markov-source"),
        ("wikitext", None),
    ],
)
def test_retain_dataset_for(name, retain):
    assert retain_dataset_for(name) == retain


def test_unknown_dataset_is_a_user_error():
    with pytest.raises(UserError, match='did you mean "markov-mix"'):
        markov_blocks("markov-mixx")


def test_floor_values():
    """The published floors of the default val splits (docs/benchmark.md quotes them)."""
    floors = {n: markov_blocks(n, 128, n_train=1).floor for n in MARKOV_DATASETS}
    assert floors == pytest.approx(EXPECTED_FLOORS, abs=5e-5)


EXPECTED_FLOORS = {
    "markov-source": 1.8134,
    "markov-lexical": 1.8130,
    "markov-transition": 1.8312,
    "markov-copy": 1.8182,
    "markov-mix": 1.8087,
}


def test_recipe_change_needs_a_version_bump():
    """The cached tiny-markov is keyed by GENERATOR_VERSION: pin what it stands for."""
    import hashlib
    import json

    from loraplace.builtin.pretrain import recipe

    digest = hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:12]
    assert digest == "0778062b0edd", (
        "generator or pretraining recipe changed: bump markov.GENERATOR_VERSION, then pin the "
        "new digest here"
    )
