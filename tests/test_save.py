"""Saved adapters: one per run (or the best), loadable with PEFT, reproducing the eval loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from run_fixtures import tiny_study

from loraplace.adapters import ADAPTERS, CONFIG, SIDECAR, write_adapter
from loraplace.data import load_blocks
from loraplace.driver import run_study
from loraplace.runs import RunSpec
from loraplace.store import Store
from loraplace.study import validate_study
from loraplace.train import evaluate
from loraplace.train.save import evaluate_adapter, load_adapter

torch.set_num_threads(1)


def _run(tmp_path: Path, **overrides) -> tuple[Path, list[dict], dict[str, dict[str, float]]]:
    study = validate_study(tiny_study(tmp_path, **overrides))
    run_study(study)
    with Store(study.out_dir, create=False, writer=False) as store:
        runs = store.runs(store.study()["study_id"])
        return study.out_dir, runs, store.metrics()


@pytest.fixture(scope="module")
def saved_all(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("save-all"), save="all")


def test_save_all_leaves_one_loadable_adapter_per_lora_run(saved_all):
    out, runs, _ = saved_all
    lora = sorted(r["run_id"] for r in runs if r["kind"] == "lora")
    assert len(lora) == 4  # 2 placements x 2 seeds; zero-shot runs have no adapter
    assert sorted(p.name for p in (out / ADAPTERS).iterdir()) == lora
    for rid in lora:
        files = sorted(p.name for p in (out / ADAPTERS / rid).iterdir())
        assert files == ["README.md", CONFIG, "adapter_model.safetensors", SIDECAR]
        cfg = json.loads((out / ADAPTERS / rid / CONFIG).read_text())
        # an absolute path that loads, not the string typed in the study
        assert Path(cfg["base_model_name_or_path"]).is_absolute()
        assert (Path(cfg["base_model_name_or_path"]) / "config.json").is_file()


def test_reloaded_adapter_reproduces_the_stored_eval_loss_exactly(saved_all):
    """PeftModel.from_pretrained on the base model the config names, the same val blocks."""
    out, runs, metrics = saved_all
    spec = RunSpec.from_dict(next(r for r in runs if r["kind"] == "lora")["spec"])
    path = out / ADAPTERS / spec.run_id
    assert (
        json.loads((path / SIDECAR).read_text())["model_fingerprint"]
        == (spec.fingerprints["model"])
    )
    from transformers import AutoTokenizer

    t = spec.train
    tok = AutoTokenizer.from_pretrained(spec.model)
    val = load_blocks(spec.dataset, tok, t.block_size, split_seed=t.split_seed).val
    stored = metrics[spec.run_id]["eval_loss"]
    assert evaluate_adapter(path, val, t).loss == stored  # the run's own eval path: exact
    net = load_adapter(path)
    assert type(net).__name__ == "PeftModelForCausalLM"
    plain = evaluate(net, val, batch_size=t.eval_batch_size).loss  # plain kernels: rounding
    assert plain == pytest.approx(stored, abs=1e-7)
    with net.disable_adapter():  # the adapter is what makes the number
        assert evaluate(net, val).loss > stored + 0.01


def test_save_best_keeps_only_the_lowest_loss_run(tmp_path):
    out, runs, metrics = _run(tmp_path)  # save: best is the default
    lora = {r["run_id"]: metrics[r["run_id"]]["eval_loss"] for r in runs if r["kind"] == "lora"}
    kept = [p.name for p in (out / ADAPTERS).iterdir()]
    assert kept == [min(lora, key=lora.get)]


def test_save_none_writes_no_adapter(tmp_path):
    out, runs, _ = _run(tmp_path, save="none", placements=["seed-ffn"], seeds=[0])
    assert [r["status"] for r in runs] == ["done", "done"]
    assert not (out / ADAPTERS).exists()


def test_a_failed_write_leaves_no_partial_adapter(tmp_path, saved_all):
    out, runs, metrics = saved_all
    spec = RunSpec.from_dict(next(r for r in runs if r["kind"] == "lora")["spec"])
    good = {p.name: p.read_bytes() for p in (out / ADAPTERS / spec.run_id).iterdir()}
    dest = tmp_path / ADAPTERS / spec.run_id
    write_adapter(good, dest, spec, metrics[spec.run_id])
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    broken = {**good, "zz_broken.bin": None}  # fails after the real files are written
    with pytest.raises(TypeError):
        write_adapter(broken, dest, spec, metrics[spec.run_id])
    assert [p.name for p in dest.parent.iterdir()] == [spec.run_id]  # no temp dir left
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before


def test_export_run_id_hands_over_the_trained_weights(saved_all, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loraplace.cli import run_cli

    out, runs, metrics = saved_all
    rid = next(r["run_id"] for r in runs if r["kind"] == "lora")
    dest = tmp_path / "export"
    assert run_cli(["export", rid[:10], "--from", str(out.parent), "-o", str(dest)]) == 0
    names = sorted(p.name for p in dest.iterdir())
    assert names == ["README.md", CONFIG, "adapter_model.safetensors", SIDECAR]
    assert (dest / "adapter_model.safetensors").read_bytes() == (
        out / ADAPTERS / rid / "adapter_model.safetensors"
    ).read_bytes()
    base = json.loads((dest / CONFIG).read_text())["base_model_name_or_path"]
    net = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(dest))
    n_lora = sum(p.numel() for n, p in net.named_parameters() if "lora_" in n)
    assert n_lora == metrics[rid]["trainable_params"] > 0
    capsys.readouterr()
    assert run_cli(["export", "0123456789abcdef", "--from", str(out), "-o", str(dest)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no saved adapter for run '0123456789abcdef'" in err


def test_recommend_peft_copies_the_best_runs_weights(saved_all, tmp_path):
    from loraplace.cli import run_cli

    out, runs, metrics = saved_all
    dest = tmp_path / "rec"
    assert run_cli(["recommend", str(out), "--budget", "99%", "-f", "peft", "-o", str(dest)]) == 0
    sidecar = json.loads((dest / SIDECAR).read_text())
    same = {
        r["run_id"]: metrics[r["run_id"]]["eval_loss"]
        for r in runs
        if r["placement"] == sidecar["placement"] and r["kind"] == "lora"
    }
    assert sidecar["run_id"] == min(same, key=same.get)  # that placement's best seed
    assert (dest / "adapter_model.safetensors").is_file()
