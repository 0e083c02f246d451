"""Settings for large models: gradient accumulation and checkpointing, lora_bias,
modules_to_save, and the run ids and memory measures that go with them."""

from __future__ import annotations

import dataclasses
import mmap

import pytest
import torch
from run_fixtures import load_tiny, write_tiny_model

from loraplace.errors import UserError
from loraplace.placement import resolve
from loraplace.placement.accounting import (
    lora_bias_params,
    modules_to_save_params,
    run_trainable_params,
)
from loraplace.runs import RunSpec, TrainSettings
from loraplace.train import train_run
from loraplace.train.memory import MemoryMeter

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_tiny(tmp_path_factory.mktemp("tiny"))


def _spec(model, placement="seed-full", kind="lora", **train) -> RunSpec:
    settings = dict(steps=6, batch_size=8, block_size=16, lr=1e-2, warmup_steps=2, eval_every=3)
    settings.update(train)
    return RunSpec(
        study="t",
        placement_name=placement,
        kind=kind,
        model="tiny",
        dataset="g",
        seed=0,
        train=TrainSettings(**settings),
        modules=resolve(placement, model, rank=2).as_dicts() if kind == "lora" else (),
    )


def _curve(r, name="train_loss"):
    return [v for _, v in r.curves[name]]


@pytest.mark.parametrize("accum", [2, 8])
def test_grad_accum_gives_the_loss_curve_of_one_big_batch(tiny, accum):
    model, blocks = tiny
    one = train_run(_spec(model), model, blocks, keep_adapter=False)
    many = train_run(_spec(model, grad_accum=accum), model, blocks, keep_adapter=False)
    assert one.metrics["eval_loss"] < one.metrics["zero_shot_loss"] - 0.05  # it trains
    assert _curve(many) == pytest.approx(_curve(one), abs=2e-6)
    assert _curve(many, "eval_loss") == pytest.approx(_curve(one, "eval_loss"), abs=2e-6)
    assert many.manifest["grad_accum"] == accum
    assert many.manifest["micro_batch_size"] == 8 // accum


def test_grad_accum_must_divide_the_batch():
    with pytest.raises(UserError, match="grad_accum 3 must be >= 1 and divide"):
        TrainSettings(batch_size=8, grad_accum=3)


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_grad_checkpointing_same_curve_and_switched_off_after(tiny, kind):
    model, blocks = tiny
    off = train_run(_spec(model, kind=kind), model, blocks, keep_adapter=False)
    on = train_run(_spec(model, kind=kind, grad_checkpointing=True), model, blocks)
    assert _curve(on) == pytest.approx(_curve(off), abs=1e-6)
    assert on.manifest["grad_checkpointing"] is True
    assert not model.is_activation_checkpointing


def test_lora_bias_and_modules_to_save_counted_exactly_and_base_restored(tiny):
    model, blocks = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rp = resolve("seed-full", model, rank=2)
    assert rp.trainable_params == 2048
    # 2 layers x (c_attn 96 + attn.c_proj 32 + c_fc 128 + mlp.c_proj 32) bias entries
    assert lora_bias_params(rp.modules) == 2 * (96 + 32 + 128 + 32) == 576
    # the tied lm_head's copy: vocab 27 x 32
    assert modules_to_save_params(model, ["lm_head"]) == 27 * 32 == 864
    assert modules_to_save_params(model, ["ln_f"]) == 64
    spec = _spec(model, lora_bias=True, modules_to_save=("lm_head", "ln_f"))
    r = train_run(spec, model, blocks)
    expected = 2048 + 576 + 864 + 64
    assert r.metrics["trainable_params"] == expected
    assert run_trainable_params(rp, model, lora_bias=True, modules_to_save=["lm_head", "ln_f"]) == (
        expected
    )
    assert r.manifest["modules_to_save"] == ["lm_head", "ln_f"] and r.manifest["lora_bias"]
    # The base model comes back as it came: same weights, lm_head still tied to wte.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert sum(p.numel() for p in model.parameters()) == 28384
    with pytest.raises(UserError, match="modules_to_save names 'nope'"):
        modules_to_save_params(model, ["nope"])


def test_dora_magnitudes_counted_as_peft_counts_them(tmp_path):
    """DoRA adds a magnitude per output feature of each adapted module: PEFT's own count."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from loraplace.placement import lora_config
    from loraplace.train.memory_estimate import estimate_memory

    model = AutoModelForCausalLM.from_pretrained(write_tiny_model(tmp_path / "m"))
    rp = resolve("seed-full", model, rank=2, use_dora=True)
    ours = run_trainable_params(rp, model, modules_to_save=["lm_head"])
    est = estimate_memory(model.config, rp, batch_size=4, block_size=16, eval_batch_size=4)
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = lora_config(rp.modules, use_dora=True, modules_to_save=["lm_head"])
    net = get_peft_model(model, cfg)
    trainable, _ = net.get_nb_trainable_parameters()
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == trainable
    magnitudes = sum(p.numel() for n, p in net.named_parameters() if "lora_magnitude_vector" in n)
    # 2 layers x (c_attn 96 + attn.c_proj 32 + c_fc 128 + mlp.c_proj 32) magnitudes
    assert magnitudes == 576
    assert trainable == ours == 2048 + 576 + 27 * 32
    # plan --memory's adapter bytes are the same count, with no lm_head copy asked for
    assert est.adapter == (2048 + 576) * 4 and est.optimizer == 2 * est.adapter


def test_dora_with_lora_bias_is_one_clear_error(tiny):
    from loraplace.placement import lora_config

    model, _ = tiny
    rp = resolve("seed-ffn", model, rank=2)
    with pytest.raises(UserError, match="lora_bias cannot be used with DoRA"):
        lora_config(rp.modules, use_dora=True, lora_bias=True)


def test_peft_counts_the_same_on_the_meta_device(tiny):
    """The accounting needs shapes only: PEFT's own count on a meta model agrees."""
    from peft import get_peft_model

    from loraplace.models import meta_model
    from loraplace.placement import lora_config

    model, _ = tiny
    meta = meta_model(model.config)
    rp = resolve("seed-ffn", meta, rank=4)
    cfg = lora_config(rp.modules, lora_bias=True, modules_to_save=["lm_head"])
    trainable, _ = get_peft_model(meta, cfg).get_nb_trainable_parameters()
    assert trainable == run_trainable_params(
        rp, meta_model(model.config), lora_bias=True, modules_to_save=["lm_head"]
    )
    assert trainable == 4 * 2 * (32 + 128) + 2 * 128 + 27 * 32


def test_run_ids_of_existing_settings_do_not_change():
    """A spec at the new settings' defaults keeps the id it had before they existed."""
    spec = RunSpec(
        study="t",
        placement_name="p",
        kind="lora",
        model="m",
        dataset="d",
        seed=0,
        train=TrainSettings(steps=8, batch_size=4),
        modules=({"name": "a", "rank": 2},),
    )
    assert spec.run_id == "60e711d827acc565"  # computed by loraplace before this change
    changed = {
        "grad_accum": 2,
        "grad_checkpointing": True,
        "lora_bias": True,
        "modules_to_save": ("lm_head",),
    }
    ids = {spec.run_id}
    for key, value in changed.items():
        ids.add(
            dataclasses.replace(spec, train=dataclasses.replace(spec.train, **{key: value})).run_id
        )
    ids.add(dataclasses.replace(spec, quantize="4bit").run_id)
    assert len(ids) == 6  # every setting is part of the identity
    again = RunSpec.from_dict(dataclasses.replace(spec, quantize="4bit").to_dict())
    assert again.run_id == dataclasses.replace(spec, quantize="4bit").run_id


def test_study_ids_and_schema():
    from loraplace.study import apply_overrides, validate_study

    cfg = {"name": "x", "model": "tiny-markov", "placements": ["seed-ffn"], "train": {"steps": 5}}
    assert validate_study(cfg).study_id == "533cc4915ce6"  # as before the new settings
    assert validate_study({**cfg, "save": "all"}).study_id == "533cc4915ce6"
    q = validate_study({**cfg, "model": {"name": "tiny-markov", "quantize": "4bit"}})
    assert (q.model, q.quantize) == ("tiny-markov", "4bit") and q.study_id != "533cc4915ce6"
    over = apply_overrides(cfg, ["model.quantize=8bit", "train.grad_accum=4"])
    s = validate_study(over)
    assert (s.model, s.quantize, s.train.grad_accum) == ("tiny-markov", "8bit", 4)
    with pytest.raises(UserError, match="train.grad_accum 3 must be"):
        validate_study(apply_overrides(cfg, ["train.grad_accum=3"])).train_settings()
    with pytest.raises(UserError, match="save"):
        validate_study({**cfg, "save": "some"})


def _fresh(mib: int) -> mmap.mmap:
    """``mib`` MiB of anonymous memory, every page touched. A fresh mapping always grows
    RSS; a malloc'ed tensor may reuse heap that earlier tests left resident (and in a long
    test process it did: the 64 MiB then read as no growth at all)."""
    m = mmap.mmap(-1, mib * 2**20)
    for offset in range(0, len(m), mmap.PAGESIZE):  # one byte a page: no buffer of its own
        m[offset] = 1
    return m


def test_cpu_memory_is_the_growth_during_the_run_not_the_high_water_mark():
    meter = MemoryMeter(torch.device("cpu"))
    meter.start()
    _fresh(64).close()  # 64 MiB, touched and unmapped again
    first = meter.stop()["rss_growth_bytes"]
    assert 60 * 2**20 <= first < 80 * 2**20
    meter = MemoryMeter(torch.device("cpu"))
    meter.start()
    _fresh(4).close()  # 4 MiB: the earlier 64 MiB must not count
    assert meter.stop()["rss_growth_bytes"] < 16 * 2**20


def test_cpu_memory_baseline_survives_memory_freed_as_the_meter_starts(monkeypatch):
    """A collection that frees memory while the meter starts must not hide the run's growth."""
    from loraplace.train import memory

    garbage = [_fresh(96)]  # 96 MiB, resident, unmapped as the meter starts
    reset = memory._reset_hwm

    def free_then_reset() -> bool:
        garbage.pop().close()
        return reset()

    monkeypatch.setattr(memory, "_reset_hwm", free_then_reset)
    meter = MemoryMeter(torch.device("cpu"))
    meter.start()
    assert not garbage
    _fresh(64).close()
    assert 60 * 2**20 <= meter.stop()["rss_growth_bytes"] < 80 * 2**20
