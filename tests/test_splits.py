"""Train / validation / test splits: seeded, disjoint, recorded in the fingerprint."""

from __future__ import annotations

import torch
from run_fixtures import write_text, write_tiny_model
from transformers import AutoTokenizer

from loraplace.data import load_blocks


def _rows(t: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(r.tolist()) for r in t}


def test_markov_test_split_is_its_own_stream_and_val_keeps_its_fingerprint():
    plain = load_blocks("markov-copy", None, 32)
    val = load_blocks("markov-copy", None, 32, test_fraction=0.1)
    test = load_blocks("markov-copy", None, 32, test_fraction=0.1, holdout="test")
    assert val.fingerprint == plain.fingerprint
    assert torch.equal(test.train, plain.train) and torch.equal(val.val, plain.val)
    assert test.val.shape == plain.val.shape
    assert not _rows(test.val) & _rows(plain.val)
    assert test.fingerprint != plain.fingerprint
    assert test.floor is not None and abs(test.floor - plain.floor) < 0.05
    again = load_blocks("markov-copy", None, 32, test_fraction=0.1, holdout="test")
    assert torch.equal(again.val, test.val)


def test_text_test_split_is_carved_from_train_disjoint_and_seeded(tmp_path):
    model = write_tiny_model(tmp_path / "m")
    data = write_text(tmp_path / "t.txt", n_sentences=800)
    tok = AutoTokenizer.from_pretrained(model)
    plain = load_blocks(str(data), tok, 16)
    val = load_blocks(str(data), tok, 16, test_fraction=0.2)
    test = load_blocks(str(data), tok, 16, test_fraction=0.2, holdout="test")
    n = plain.train.shape[0] + plain.val.shape[0]
    assert test.val.shape[0] == round(0.2 * n)
    assert val.train.shape[0] + val.val.shape[0] + test.val.shape[0] == n
    assert torch.equal(val.train, test.train) and torch.equal(val.val, plain.val)
    # Row indices, not contents, make the split: compare the carved rows by position.
    assert torch.equal(torch.cat([val.train, test.val]), plain.train)
    assert len({val.fingerprint, test.fingerprint, plain.fingerprint}) == 3
    other_seed = load_blocks(str(data), tok, 16, test_fraction=0.2, holdout="test", split_seed=1)
    assert not torch.equal(other_seed.val, test.val)
