"""Studies across models (issue 23 item 3): ``models:`` crosses placements x models x
seeds, placements resolve by role on each family, budgets are matched per model, and the
report sets the models side by side with Kendall's W and the cheap-proxy answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from run_fixtures import run_study, tiny_study, write_tiny_llama

from loraplace.analysis.agreement import rank_table
from loraplace.analysis.models import proxy_check
from loraplace.errors import UserError
from loraplace.study import expand, validate_study


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny GPT-2 and a tiny LLaMA (hidden 48) on the same tokenizer and data."""
    tmp = tmp_path_factory.mktemp("models")
    cfg = tiny_study(tmp)
    gpt2 = cfg.pop("model")
    llama = str(write_tiny_llama(tmp / "tiny-llama"))
    cfg.update(models=[gpt2, {"name": "llama", "model": llama}], placements=["attention", "mlp"])
    return tmp, cfg


def _lora(specs, model_name):
    return [s for s in specs if s.model_name == model_name and s.kind == "lora"]


def test_expansion_crosses_placements_models_and_seeds_model_by_model(two_models):
    _, cfg = two_models
    specs, _ = expand(validate_study(cfg))
    gpt2 = cfg["models"][0]  # a plain reference is its own label
    # per model: zero-shot + 2 placements x 2 seeds; every run of GPT-2 before LLaMA's
    assert [(s.model_name, s.placement_name, s.seed) for s in specs] == [
        (gpt2, "zero-shot", 0),
        (gpt2, "attention", 0),
        (gpt2, "attention", 1),
        (gpt2, "mlp", 0),
        (gpt2, "mlp", 1),
        ("llama", "zero-shot", 0),
        ("llama", "attention", 0),
        ("llama", "attention", 1),
        ("llama", "mlp", 0),
        ("llama", "mlp", 1),
    ]
    assert [s.model for s in specs] == [gpt2] * 5 + [cfg["models"][1]["model"]] * 5
    # the same placement resolved by role on each family's own module names
    names = {s.model_name: {m["name"].split(".")[-1] for m in s.modules} for s in specs[1:7:5]}
    assert names == {gpt2: {"c_attn", "c_proj"}, "llama": {"q_proj", "k_proj", "v_proj", "o_proj"}}
    assert len({s.run_id for s in specs}) == 10


def test_models_cross_tasks_model_by_model(two_models):
    from run_fixtures import write_text

    tmp, cfg = two_models
    other = write_text(tmp / "other.txt", seed=1)
    datasets = [{"name": "a", "dataset": cfg["dataset"]}, {"name": "b", "dataset": str(other)}]
    single = {k: v for k, v in cfg.items() if k != "dataset"}
    specs, _ = expand(validate_study({**single, "datasets": datasets}))
    # per model and task: zero-shot + 2 placements x 2 seeds
    got = [(s.model_name, s.task) for s in specs]
    g = cfg["models"][0]
    assert got == [(g, "a")] * 5 + [(g, "b")] * 5 + [("llama", "a")] * 5 + [("llama", "b")] * 5


def test_budget_is_matched_per_model(two_models):
    _, cfg = two_models
    specs, warnings = expand(validate_study({**cfg, "budget": 3072}))

    def matched(model_name):
        out = {}
        for s in _lora(specs, model_name):
            ranks = {m["rank"] for m in s.modules}
            params = sum(m["rank"] * (m["in_features"] + m["out_features"]) for m in s.modules)
            out[s.placement_name] = (ranks, params)
        return out

    # GPT-2 (hidden 32): attention 2 x (32x96 + 32x32) = 384 per rank; mlp 640 per rank
    assert matched(cfg["models"][0]) == {"attention": ({8}, 3072), "mlp": ({4}, 2560)}
    # LLaMA (hidden 48): attention 2 x 4 x 96 = 768 per rank; mlp 2 x 3 x 144 = 864
    assert matched("llama") == {"attention": ({4}, 3072), "mlp": ({3}, 2592)}
    assert "llama: mlp: budget 3,072 -> 2,592 trainable params (-480, -15.62 %)" in warnings


def test_one_listed_model_keeps_the_run_ids_of_model(two_models):
    _, cfg = two_models
    gpt2 = cfg["models"][0]
    single = {k: v for k, v in cfg.items() if k != "models"}
    a, _ = expand(validate_study({**single, "model": gpt2}))
    b, _ = expand(validate_study({**single, "models": [gpt2]}))
    assert [s.run_id for s in a] == [s.run_id for s in b]
    # a study without models keeps its id (models is hashed only when set)
    assert validate_study({**single, "model": gpt2}).study_id != validate_study(cfg).study_id


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3_text"])
def test_role_presets_resolve_on_each_family(family):
    from families import FAMILIES
    from transformers import Gemma3TextConfig

    from loraplace.placement import parse_placement, resolve
    from loraplace.placement.resolve import _arch_of

    if family == "gemma3_text":
        config = Gemma3TextConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            vocab_size=100,
        )
    else:
        config = FAMILIES[family]()
    arch = _arch_of(config)
    got = {}
    for preset in ("attention", "mlp", "all-linear"):
        rp = resolve(parse_placement(preset), arch, rank=1)
        got[preset] = sorted({m.name.split(".")[-1] for m in rp.modules})
    want = {
        "gpt2": (["c_attn", "c_proj"], ["c_fc", "c_proj"], ["c_attn", "c_fc", "c_proj"]),
        "llama": (
            ["k_proj", "o_proj", "q_proj", "v_proj"],
            ["down_proj", "gate_proj", "up_proj"],
            ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
        ),
    }
    want["gemma3_text"] = want["llama"]
    assert (got["attention"], got["mlp"], got["all-linear"]) == want[family]


def test_proxy_check_says_whether_the_small_model_ranked_as_the_big_one():
    ranks = rank_table(
        {
            "small": {"a": 1.0, "b": 2.0, "c": 3.0},
            "big": {"a": 1.5, "b": 1.2, "c": 3.5},
        }
    )
    p = proxy_check(ranks, {"small": 10, "big": 1000})
    assert p is not None and (p.small, p.big) == ("small", "big")
    assert p.small_order == ("a", "b", "c") and p.big_order == ("b", "a", "c")
    assert not p.same_order
    assert p.spearman == pytest.approx(0.5)  # ranks (1,2,3) vs (2,1,3)
    assert p.kendall_tau == pytest.approx(1 / 3)
    assert proxy_check(ranks, {"small": 10, "big": 10}) is None


@pytest.mark.slow
def test_study_across_two_models_end_to_end(two_models, tmp_path, capsys):
    from loraplace.report import build_report

    _, cfg = two_models
    cfg = {**cfg, "out": str(tmp_path / "out"), "train": {**cfg["train"], "steps": 4}}
    cfg["analysis"] = {"margin": 1e-6}  # 2 seeds resolve no pair: each model is warned
    runs, metrics = run_study(tmp_path, cfg)
    said = " ".join(capsys.readouterr().out.split())
    assert said.count("seeds are too few to resolve the ±1e-06 margin") == 2
    assert "warning: llama: 2 seeds are too few" in said
    assert len(runs) == 10 and {r["status"] for r in runs} == {"done"}
    # the models' own sizes: GPT-2 (hidden 32) is the small one
    sizes = {r["spec"]["model_name"]: metrics[r["run_id"]]["total_params"] for r in runs}
    assert sizes[cfg["models"][0]] < sizes["llama"]
    # the end-of-run table keeps the models apart: model/placement rows
    from loraplace.run_table import run_end_rows
    from loraplace.store import Store

    with Store(Path(cfg["out"]), create=False, writer=False) as store:
        rows = run_end_rows(store, store.study()["study_id"])
    g = cfg["models"][0]
    assert [(r.placement, r.done) for r in rows] == [
        (f"{g}/zero-shot", 1),
        (f"{g}/attention", 2),
        (f"{g}/mlp", 2),
        ("llama/zero-shot", 1),
        ("llama/attention", 2),
        ("llama/mlp", 2),
    ]
    from loraplace.predict.validate import validate

    gpt2 = cfg["models"][0]
    doc = validate(cfg["out"], ["out_norm"])  # per model: each model's placements apart
    assert [(c["model"], c["n_candidates"]) for c in doc["cells"]] == [(gpt2, 2), ("llama", 2)]
    from loraplace.predict.validate import write

    write(doc, Path(cfg["out"]))  # the report gives its table
    out = build_report(cfg["out"], tmp_path / "report")
    md = (out.out / "report.md").read_text()
    assert "## Models" in md
    methods = md[md.index("## Methods") : md.index("## Results")]
    assert "The base model is " + cfg["models"][0].replace("_", "\\_") + " (" in methods
    assert (out.out / "tables" / "results_model1.csv").is_file()
    assert (out.out / "tables" / "results_model2.csv").is_file()
    assert "## Predictors" in md
    assert len((out.out / "tables" / "predictors.csv").read_text().splitlines()) == 3
    csv = (out.out / "tables" / "models.csv").read_text().splitlines()
    assert len(csv) == 3  # header + attention + mlp
    assert "Across the 2 models the placement rankings" in md
    assert "Kendall's W = " in md
    line = next(x for x in md.splitlines() if x.startswith("Cheap proxy"))
    assert line.startswith(
        ("Cheap proxy: yes, the small model", "Cheap proxy: no, the small model")
    )
    assert gpt2 in line.replace("\\", "") and "llama" in line and "Spearman ρ = " in line


def test_the_shipped_example_crosses_two_built_ins_at_one_budget_each():
    from collections import Counter

    from loraplace.study import load_study

    specs, warnings = expand(load_study("examples/across_models.yaml"))
    counts = Counter((s.model, s.kind) for s in specs)
    # per model: zero-shot + 3 placements x 3 seeds
    assert counts == {
        ("tiny-markov", "zero-shot"): 1,
        ("tiny-markov", "lora"): 9,
        ("tiny-python", "zero-shot"): 1,
        ("tiny-python", "lora"): 9,
    }
    assert [s.model for s in specs] == ["tiny-markov"] * 10 + ["tiny-python"] * 10
    assert "tiny-python: attention: budget 40,960 -> 39,936 trainable params" in "\n".join(warnings)


def test_halving_judges_each_models_settings_apart(two_models, tmp_path):
    from loraplace.executors.halving import HalvingExecutor, Record

    _, cfg = two_models
    train = {**cfg["train"], "lr": [1e-3, 1e-2], "steps": 4}
    study = validate_study(
        {**cfg, "placements": ["mlp"], "seeds": [0], "train": train, "select": {"prune": "halving"}}
    )
    specs = [s for s in expand(study)[0] if s.kind == "lora"]
    # lr 1e-3 is best on GPT-2 by a hair, lr 1e-2 best on LLaMA; pooled, 1e-3 would win both
    loss = {(0, "mlp@lr0.001"): 1.0, (0, "mlp@lr0.01"): 1.1}
    loss |= {(1, "mlp@lr0.001"): 9.0, (1, "mlp@lr0.01"): 5.0}
    model = {cfg["models"][0]: 0, cfg["models"][1]["model"]: 1}
    records = {
        s.run_id: Record("paused", {"eval_loss": [(2, loss[model[s.model], s.placement_name])]})
        for s in specs
    }
    ex = HalvingExecutor(
        None, specs, [2, 4], reduction=2, records=records, checkpoints=tmp_path / "ck"
    )
    pruned = []
    kept = ex._judge(specs, 2, pruned.append)
    assert [(s.model_name, s.placement_name) for s in kept] == [
        (cfg["models"][0], "mlp@lr0.001"),
        ("llama", "mlp@lr0.01"),
    ]
    assert len(pruned) == 2


def _refused(cfg: dict) -> str:
    with pytest.raises(UserError) as exc:
        validate_study(cfg, "s.yaml")
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


@pytest.mark.fault("models")
def test_model_and_models_together_is_one_line(two_models):
    _, cfg = two_models
    msg = _refused({**cfg, "model": "tiny-markov"})
    assert msg == (
        "s.yaml: the study has both model and models: keep models (a list of models) and "
        "remove model"
    )


@pytest.mark.fault("models")
def test_empty_models_is_one_line(two_models):
    _, cfg = two_models
    assert _refused({**cfg, "models": []}) == "s.yaml: models is empty: give at least one model"


@pytest.mark.fault("models")
def test_a_model_listed_twice_is_one_line(two_models):
    _, cfg = two_models
    msg = _refused({**cfg, "models": [cfg["models"][0], cfg["models"][0]]})
    assert msg.endswith("appears twice in models: list each model once")


@pytest.mark.fault("models")
def test_probe_across_models_is_one_line(two_models):
    _, cfg = two_models
    assert "probe and allocate placements score one model" in _refused({**cfg, "probe": {}})


@pytest.mark.fault("models")
def test_unknown_model_in_the_list_fails_before_anything_is_written(two_models, tmp_path):
    import yaml

    from loraplace.cli import run_cli

    _, cfg = two_models
    out = tmp_path / "out"
    cfg = {**cfg, "models": [cfg["models"][0], "no-such-model-xyz"], "out": str(out)}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert run_cli(["run", str(path)]) == 2
    assert not out.exists()


def test_each_models_budget_is_stored_and_read_back(two_models, tmp_path):
    """The same budget text is a different count on each model; the store held the first
    model's only, so the report could not give the others'."""
    from loraplace.analysis import read_study_data
    from loraplace.assets import Assets
    from loraplace.driver import _register, prepare_study
    from loraplace.store import Store

    _, cfg = two_models
    study = validate_study({**cfg, "budget": "attention@r8", "out": str(tmp_path)})
    prepared = prepare_study(study, Assets())
    gpt2 = cfg["models"][0]
    # GPT-2 (hidden 32): attention 384 per rank; LLaMA (hidden 48): 768 per rank
    assert prepared.budget == 3072
    assert prepared.model_budgets == {gpt2: 3072, "llama": 6144}
    with Store(tmp_path) as store:
        _register(store, study, prepared, "loraplace run x.yaml")
    data = read_study_data(tmp_path)
    assert data.budget == 3072
    assert data.model_budgets == {gpt2: 3072, "llama": 6144}
