"""Loading models: built-in tiny-markov, local directories, hub ids; the meta model."""

from __future__ import annotations

import json
import time

import pytest
import torch

from loraplace.builtin import BUILTIN_MODELS, builtin_model_info, is_builtin_model
from loraplace.builtin.markov import MARKOV_DATASETS, VOCAB, markov_blocks
from loraplace.builtin.pretrain import eval_loss, unigram_loss
from loraplace.errors import UserError
from loraplace.models import load_config, load_model, meta_model, model_fingerprint

NOISE = 0.01  # nats: how far a model may dip below the floor by sampling noise on 256 blocks


@pytest.fixture(scope="module")
def tiny_markov(tiny_markov_dir):
    model, tokenizer = load_model("tiny-markov")
    return model.eval(), tokenizer


def test_builtin_config_needs_no_pretraining():
    cfg = load_config("tiny-markov")
    assert (cfg.model_type, cfg.n_layer, cfg.n_embd, cfg.n_head) == ("gpt2", 4, 128, 4)
    assert (cfg.vocab_size, cfg.n_positions) == (len(VOCAB), 128)
    assert cfg.activation_function == "gelu_pytorch_tanh"
    meta = meta_model("tiny-markov")
    n_params = sum(p.numel() for p in meta.parameters())
    # wte 71x128 + wpe 128x128 + 4 blocks x 198,272 + final LayerNorm 256 (lm_head is tied)
    assert n_params == 71 * 128 + 128 * 128 + 4 * 198_272 + 256 == 818_816
    assert is_builtin_model("tiny-markov") and not is_builtin_model("gpt2")


def test_meta_model_of_gpt2_medium_is_fast_and_exact():
    from transformers import GPT2Config

    meta_model(GPT2Config(n_layer=1, n_embd=64, n_head=2))  # imports out of the timing
    start = time.perf_counter()
    model = meta_model(GPT2Config(n_embd=1024, n_layer=24, n_head=16))
    elapsed = time.perf_counter() - start
    assert sum(p.numel() for p in model.parameters()) == 354_823_168
    assert model.transformer.h[0].attn.c_attn.weight.device.type == "meta"
    assert elapsed < 10.0


def test_pretrained_tiny_markov_closes_the_gap(tiny_markov, tiny_markov_dir):
    """Held-out source loss: never below the floor by more than noise; >= 95 % of the gap."""
    model, _ = tiny_markov
    info = json.loads((tiny_markov_dir / "loraplace_builtin.json").read_text())
    assert info == builtin_model_info("tiny-markov")
    blocks = markov_blocks("markov-source", 128, n_train=2048)
    loss = eval_loss(model, blocks.val)
    unigram = unigram_loss(blocks.train.numpy(), blocks.val.numpy())
    assert loss >= blocks.floor - NOISE
    assert (unigram - loss) / (unigram - blocks.floor) >= 0.95
    assert info["gap_closed"] >= 0.95 and info["floor"] == pytest.approx(blocks.floor)
    assert info["val_loss"] == pytest.approx(loss, abs=2e-3)  # saved and reloaded: same model


@pytest.mark.parametrize("name", [n for n in MARKOV_DATASETS if n != "markov-source"])
def test_targets_leave_room_above_the_floor(tiny_markov, name):
    model, _ = tiny_markov
    blocks = markov_blocks(name, 128, n_train=1, n_val=64)
    assert eval_loss(model, blocks.val) > blocks.floor + 0.1


def test_tokenizer_matches_generated_ids(tiny_markov):
    _, tok = tiny_markov
    assert tok("t0 t5 <copy> t63 <src> <cpy>")["input_ids"] == [0, 5, 65, 63, 66, 69]
    assert (tok.eos_token, tok.eos_token_id) == ("<eos>", VOCAB["<eos>"])
    assert tok.decode([3, 65, 7]) == "t3 <copy> t7"


class _Spy:
    """Records the sources handed to transformers' from_pretrained, then defers to it."""

    def __init__(self, monkeypatch):
        from transformers import AutoModelForCausalLM

        self.calls: list[tuple[str, dict]] = []
        original = AutoModelForCausalLM.from_pretrained

        def spy(source, *args, **kwargs):
            self.calls.append((str(source), kwargs))
            return original(source, *args, **kwargs)

        monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)


def test_saved_model_loads_through_the_hub_path(tiny_markov, tmp_path, monkeypatch):
    model, tok = tiny_markov
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    spy = _Spy(monkeypatch)
    loaded, loaded_tok = load_model(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError):
        load_model("some-org/not-a-model")
    (local, local_kw), (hub, hub_kw) = spy.calls
    assert (local, hub) == (str(tmp_path), "some-org/not-a-model")
    for kw in (local_kw, hub_kw):  # safe defaults on both paths
        assert kw["use_safetensors"] is True and kw["trust_remote_code"] is False
    loaded_state = loaded.state_dict()
    for name, p in model.state_dict().items():
        assert torch.equal(p, loaded_state[name]), name
    assert loaded_tok("t1 t2")["input_ids"] == [1, 2]


def test_builtin_name_loads_its_shipped_dir_with_from_pretrained(tiny_markov_dir, monkeypatch):
    from loraplace.builtin.shipped import WEIGHTS_DIR

    spy = _Spy(monkeypatch)
    load_model("tiny-markov")
    assert [c[0] for c in spy.calls] == [str(tiny_markov_dir)]
    assert tiny_markov_dir.parent == WEIGHTS_DIR  # package data, not the user cache
    assert tiny_markov_dir.name == f"tiny-markov-{BUILTIN_MODELS['tiny-markov'].version}"


def test_hub_id_offline_is_a_no_network_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="no network: give a local path or a built-in model"):
        load_model("some-org/not-a-model")
    with pytest.raises(UserError, match="no network"):
        load_config("some-org/not-a-model")


def test_local_dir_without_weights(tmp_path):
    load_config("tiny-markov").save_pretrained(tmp_path)
    assert load_config(str(tmp_path)).n_layer == 4  # plan/inspect work on a config alone
    assert sum(p.numel() for p in meta_model(str(tmp_path)).parameters()) == 818_816
    with pytest.raises(UserError, match="no weights"):
        load_model(str(tmp_path))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(UserError, match="pickle"):
        load_model(str(tmp_path))


@pytest.mark.parametrize("ref, match", [("./no/such/dir", "does not exist"), ("/", "config.json")])
def test_bad_local_paths(ref, match):
    with pytest.raises(UserError, match=match):
        load_model(ref)


def test_fingerprints(tiny_markov, tmp_path):
    fp = model_fingerprint("tiny-markov")
    assert len(fp) == 16 and fp == model_fingerprint("tiny-markov")
    model, _ = tiny_markov
    model.save_pretrained(tmp_path)
    local = model_fingerprint(str(tmp_path))
    assert local == model_fingerprint(str(tmp_path))
    with torch.no_grad():
        model.transformer.wte.weight[0, 0] += 1.0
    try:
        model.save_pretrained(tmp_path)
    finally:
        with torch.no_grad():
            model.transformer.wte.weight[0, 0] -= 1.0
    assert model_fingerprint(str(tmp_path)) != local  # weights are part of it


def test_builtin_model_dir_pretrains_once_and_atomically(monkeypatch, tmp_path):
    """A crash leaves nothing in the cache; a success is cached and never redone."""
    from loraplace import builtin

    monkeypatch.setenv("LORAPLACE_CACHE", str(tmp_path))
    calls = []

    def pretrain(out, progress=None):
        calls.append(out)
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        if len(calls) == 1:
            raise RuntimeError("killed mid-pretraining")
        progress(1, 1, 0.5)
        summary = {"seconds": 0.1}
        (out / "loraplace_builtin.json").write_text(json.dumps(summary))
        return summary

    spec = builtin.BuiltinModel("fake-model", "v9", "a test double", lambda: None, pretrain)
    monkeypatch.setitem(builtin.BUILTIN_MODELS, "fake-model", spec)
    with pytest.raises(RuntimeError, match="killed"):
        builtin.builtin_model_dir("fake-model")
    assert [p.name for p in (tmp_path / "models").iterdir()] == [".fake-model-v9.lock"]
    path = builtin.builtin_model_dir("fake-model")
    assert path == tmp_path / "models" / "fake-model-v9"
    assert builtin.builtin_model_dir("fake-model") == path and len(calls) == 2
    assert calls[1].parent == path.parent and calls[1].name.startswith(".fake-model-v9.tmp-")
    assert builtin_model_info("fake-model") == {"seconds": 0.1}


def test_unknown_builtin_name_is_a_user_error():
    with pytest.raises(UserError, match='did you mean "tiny-markov"'):
        from loraplace.builtin import builtin_model_dir

        builtin_model_dir("tiny-markovv")


def test_a_builtin_runs_sdpa_attention_in_fp32_and_eager_under_bf16():
    from loraplace.assets import Assets
    from loraplace.models import attention_kernel

    assert attention_kernel("tiny-markov", "fp32") == "sdpa"
    assert attention_kernel("tiny-markov", "bf16") == "eager"
    assert attention_kernel("HuggingFaceTB/SmolLM2-135M", "fp32") is None  # transformers'
    assets = Assets()
    model, _ = assets.model("tiny-markov", precision="fp32")
    assert model.config._attn_implementation == "sdpa"
    x = torch.arange(1, 17).view(1, 16) % 60
    with torch.no_grad():
        sdpa = model(input_ids=x).logits
        same, _ = assets.model("tiny-markov", precision="bf16")  # the loaded model, switched
        assert same is model and model.config._attn_implementation == "eager"
        eager = model(input_ids=x).logits
    torch.testing.assert_close(sdpa, eager, rtol=1e-5, atol=1e-5)  # the same attention
