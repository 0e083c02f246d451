"""Search over placements (Optuna) and `recommend`, on the tiny model of the run tests."""

import json

import pytest
from run_fixtures import tiny_study

from loraplace.cli import run_cli
from loraplace.store import Store
from loraplace.study import validate_study

# Whole studies end to end: `pytest -m "not slow"` skips them.
pytestmark = pytest.mark.slow

optuna = pytest.importorskip("optuna")


def _storage(study):
    from loraplace.search.optuna_search import default_storage

    return default_storage(study.out_dir)


def _study(tmp_path):
    cfg = tiny_study(tmp_path, name="s", seeds=[0], out=str(tmp_path / "out"))
    return validate_study(cfg)


def test_search_runs_trials_into_the_store_and_resumes_from_its_storage(tmp_path):
    from loraplace.search import run_search

    study = _study(tmp_path)
    first = run_search(study, trials=2, seed=3)
    assert (first.trials_done, first.trials_run) == (2, 2)
    again = run_search(study, trials=3, seed=3)  # load_if_exists: one more, not three
    assert (again.trials_done, again.trials_run) == (3, 1)
    ostudy = optuna.load_study(study_name="s-search", storage=again.storage)
    assert len(ostudy.trials) == 3
    with Store(study.out_dir) as store:
        combined = store.study()  # the latest study row links every trial's runs
        assert combined["name"] == "s-search"
        runs = store.runs(combined["study_id"])
        metrics = store.metrics()
    lora = [r for r in runs if r["kind"] == "lora"]
    # a trial that proposes an earlier trial's placement reuses its run (same run id)
    assert {rid for t in ostudy.trials for rid in t.user_attrs["run_ids"]} == {
        r["run_id"] for r in lora
    }
    # each trial's objective is its run's stored numbers
    for t in ostudy.trials:
        (rid,) = t.user_attrs["run_ids"]
        assert t.values[0] == metrics[rid]["eval_loss"]
        assert t.values[1] == metrics[rid]["trainable_params"]
    assert again.pareto and all(p["eval_loss"] > 0 for p in again.pareto)


def test_search_prunes_trials_over_budget(tmp_path):
    from loraplace.search import run_search

    study = _study(tmp_path)
    res = run_search(study, trials=2, seed=0, budget=1, ranks=(2,))
    # every placement costs more than 1 parameter: all pruned, nothing trained
    assert res.trials_done == 0
    assert not (study.out_dir / "loraplace.db").exists() or not Store(study.out_dir).runs()


def test_recommend_picks_the_best_measured_placement_within_budget(tmp_path, capsys):
    cfg = tiny_study(tmp_path, out=str(tmp_path / "out"))
    path = tmp_path / "study.yaml"
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    assert run_cli(["run", str(path)]) == 0
    capsys.readouterr()
    with Store(tmp_path / "out") as store:
        runs = [r for r in store.runs() if r["kind"] == "lora" and r["status"] == "done"]
        metrics = store.metrics()
    by = {}
    for r in runs:
        m = metrics[r["run_id"]]
        by.setdefault(r["placement"], []).append((m["eval_loss"], m["trainable_params"]))
    means = {k: (sum(x for x, _ in v) / len(v), v[0][1]) for k, v in by.items()}
    budget = max(p for _, p in means.values())
    best = min(means, key=lambda k: means[k][0])
    out = tmp_path / "export"
    code = run_cli(
        [
            "recommend",
            str(tmp_path / "out"),
            "--budget",
            str(budget),
            "--json",
            "--format",
            "peft",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["placement"] == best and rec["source"] == "measured"
    assert rec["expected_eval_loss"] == pytest.approx(means[best][0])
    assert rec["n_seeds"] == 2
    exported = json.loads((out / "adapter_config.json").read_text())
    assert sorted(exported["target_modules"]) == sorted(m["name"] for m in rec["modules"])
    # the smallest placement only: a budget below the larger one's count
    small = min(p for _, p in means.values())
    assert run_cli(["recommend", str(tmp_path / "out"), "--budget", str(small), "--json"]) == 0
    rec2 = json.loads(capsys.readouterr().out)
    assert rec2["trainable_params"] <= small
    # an Axolotl export carries the study's data (a .txt corpus: every token scored)
    argv = ["recommend", str(tmp_path / "out"), "-b", str(budget), "-f", "axolotl", "-o", str(out)]
    assert run_cli(argv) == 0
    doc = yaml.safe_load((out / "axolotl.yaml").read_text())
    data = str((tmp_path / "grammar.txt").resolve())
    assert doc["datasets"] == [
        {"path": data, "ds_type": "text", "type": "completion", "field": "text"}
    ]
    assert "train_on_inputs" not in doc and doc["lora_target_modules"]


def test_recommend_errors_are_one_line(tmp_path, capsys):
    code = run_cli(["recommend", str(tmp_path / "none.db"), "--budget", "1000"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: no results store") and "\n" not in err


@pytest.mark.skipif(
    __import__("loraplace.quantize", fromlist=["x"]).bitsandbytes_version() is None,
    reason="bitsandbytes is not installed or cannot load",
)
def test_search_trains_on_the_studys_quantized_base(tmp_path):
    """model.quantize passes through as in `run`: one quantized load serves every trial."""
    from loraplace.assets import Assets
    from loraplace.search import run_search

    loads = []

    class Recording(Assets):
        def model(self, ref, device="cpu", quantize=None, precision="fp32"):
            loads.append((quantize, precision))
            return super().model(ref, device, quantize, precision)

    cfg = tiny_study(tmp_path, name="s", seeds=[0], out=str(tmp_path / "out"))
    study = validate_study({**cfg, "model": {"name": cfg["model"], "quantize": "8bit"}})
    res = run_search(study, trials=1, seed=0, ranks=(2,), assets=Recording())
    assert res.trials_done == 1
    assert loads and set(loads) == {("8bit", "fp32")}
    with Store(study.out_dir) as store:
        (run,) = [r for r in store.runs() if r["kind"] == "lora"]
        assert run["spec"]["quantize"] == store.manifest(run["run_id"])["quantize"] == "8bit"


def test_a_dora_searchs_objective_counts_the_magnitudes(tmp_path):
    from loraplace.search import run_search

    cfg = tiny_study(tmp_path, name="s", seeds=[0], out=str(tmp_path / "out"))
    study = validate_study({**cfg, "use_dora": True})
    run_search(study, trials=1, seed=0, ranks=(2,))
    (trial,) = optuna.load_study(study_name="s-search", storage=_storage(study)).trials
    with Store(study.out_dir) as store:
        (rid,) = trial.user_attrs["run_ids"]
        stored = store.metrics()[rid]["trainable_params"]  # PEFT's count of the trained net
    assert trial.values[1] == trial.user_attrs["trainable_params"] == stored
