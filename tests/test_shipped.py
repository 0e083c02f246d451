"""The built-in weights shipped in the package: their fingerprint, loss and regeneration."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from loraplace import builtin
from loraplace.builtin.markov import markov_blocks
from loraplace.builtin.pretrain import N_VAL, eval_loss
from loraplace.builtin.shipped import WEIGHTS_DIR, weights_fingerprint
from loraplace.models import load_model


def _shipped_info() -> dict:
    spec = builtin.BUILTIN_MODELS["tiny-markov"]
    return json.loads((WEIGHTS_DIR / f"tiny-markov-{spec.version}" / spec.info_file).read_text())


def test_tiny_markov_loads_from_the_package_without_pretraining(monkeypatch, tmp_path):
    spec = builtin.BUILTIN_MODELS["tiny-markov"]

    def never(out, progress=None):
        raise AssertionError("pretrained although the package ships the weights")

    monkeypatch.setitem(builtin.BUILTIN_MODELS, "tiny-markov", replace(spec, pretrain=never))
    monkeypatch.setenv("LORAPLACE_CACHE", str(tmp_path))  # an empty cache
    path = builtin.builtin_model_dir("tiny-markov")
    assert path == WEIGHTS_DIR / f"tiny-markov-{spec.version}"
    assert not (tmp_path / "models").exists()  # nothing written to the cache
    assert builtin.builtin_model_info("tiny-markov") == _shipped_info()
    # a few MB: the whole directory, safetensors included
    assert sum(f.stat().st_size for f in path.iterdir()) < 4_000_000


def test_shipped_weights_match_their_fingerprint_and_held_out_loss(tiny_markov_dir):
    info = _shipped_info()
    assert weights_fingerprint(tiny_markov_dir) == info["weights_sha256"]
    model, _ = load_model("tiny-markov")
    val = markov_blocks("markov-source", 128, n_train=1, n_val=N_VAL).val
    assert eval_loss(model, val) == pytest.approx(info["val_loss"], abs=1e-5)
    assert info["gap_closed"] >= 0.95


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("LORAPLACE_TEST_REGENERATE"),
    reason="pretrains tiny-markov (~2 min on 2 cores): set LORAPLACE_TEST_REGENERATE=1",
)
def test_regenerating_reproduces_the_shipped_fingerprint(tmp_path):
    import torch

    from loraplace.builtin.pretrain import pretrain_tiny_markov
    from loraplace.device import cpu_has_native_bf16

    info = _shipped_info()
    threads = torch.get_num_threads()
    torch.set_num_threads(info["threads"])  # the recorded count: the same reduction order
    try:
        summary = pretrain_tiny_markov(tmp_path / "tiny-markov")
    finally:
        torch.set_num_threads(threads)
    assert summary["val_loss"] == pytest.approx(info["val_loss"], abs=1e-5)
    assert summary["recipe"] == info["recipe"]
    if cpu_has_native_bf16() == info["bf16_autocast"]:  # the same kernels: the same bits
        assert summary["weights_sha256"] == info["weights_sha256"]
