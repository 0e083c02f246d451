"""Validation per (model, task) of a study across models with an lr grid pruned by
successive halving, judged on the test split: every number checked by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_fixtures import modules
from scipy.stats import kendalltau, t, ttest_1samp, wilcoxon

from loraplace.analysis.read import read_study_data
from loraplace.cli import run_cli
from loraplace.predict.cells import first_rung, study_cells
from loraplace.predict.validate import summary, validate
from loraplace.runs import RunResult, RunSpec, TrainSettings
from loraplace.store import Store

ROLES = {
    "attention": [("attn.qkv", [0])],
    "mlp": [("mlp.up", [0])],
    "all-linear": [("mlp.down", [0])],
}
PLACEMENTS = list(ROLES)
SIZES = {"small": 1_000, "big": 5_000}
# test accuracy of the chosen grid point (lr 0.01) per seed 0, 1, 2
ACC = {  # (attention, mlp, all-linear)
    ("big", "t1"): ([0.5, 0.6, 0.7], [0.4, 0.5, 0.5], [0.8, 0.7, 0.9]),
    ("big", "t2"): ([0.6, 0.6, 0.6], [0.2, 0.3, 0.1], [0.5, 0.6, 0.4]),
    ("small", "t1"): ([0.1, 0.1, 0.1], [0.2, 0.2, 0.3], [0.3, 0.4, 0.4]),
    ("small", "t2"): ([0.3, 0.2, 0.3], [0.1, 0.1, 0.1], [0.2, 0.2, 0.2]),
}
# validation loss at the first rung (step 5) of lr 0.01; lr 0.001 is 3.0 there and pruned
RUNG = {"attention": 2.0, "mlp": 1.9, "all-linear": 2.1}
STEPS, RUNG_STEP, SECONDS = 10, 5, 2.0  # 2 s per finished run: 0.2 s per step
SELECT = {"by": "eval_loss", "prune": "halving", "rungs": 1, "reduction": 2}


def _spec(model: str, task: str, placement: str, lr: float, seed: int) -> RunSpec:
    return RunSpec(
        study="grid",
        placement_name=f"{placement}@lr{lr:g}",
        kind="lora",
        model=f"ref-{model}",
        dataset=f"data-{task}",
        seed=seed,
        train=TrainSettings(steps=STEPS, lr=lr),
        modules=modules(ROLES[placement]),
        task=task,
        placement_base=placement,
        setting={"lr": lr},
        model_name=model,
    )


def _save(store: Store, spec: RunSpec, model: str, task: str, placement: str) -> None:
    store.mark_running(spec.run_id)
    rung = RUNG[placement] if spec.train.lr == 0.01 else 3.0
    if spec.train.lr == 0.001:  # pruned at the rung: curves only, no metrics kept
        curves = {"eval_loss": [(RUNG_STEP, rung)], "train_loss": [(s, 3.0) for s in range(1, 6)]}
        store.save_result(RunResult(spec.run_id, "pruned", {}, curves))
        return
    acc = ACC[model, task][PLACEMENTS.index(placement)][spec.seed]
    metrics = {
        "eval_loss": 2.0 - acc,  # validation: lr 0.01 is the chosen point
        "test_loss": 2.5 - acc,
        "accuracy": acc - 0.05,
        "test_accuracy": acc,
        "train_time_s": SECONDS,
        "steps": STEPS,
        "total_params": SIZES[model],
    }
    curves = {
        "eval_loss": [(RUNG_STEP, rung), (STEPS, 2.0 - acc)],
        "train_loss": [(s, 2.0) for s in range(1, STEPS + 1)],
    }
    store.save_result(RunResult(spec.run_id, "done", metrics, curves))


def write_grid_store(path: Path) -> Path:
    store = Store(path)
    cfg = {"name": "grid", "placements": PLACEMENTS, "select": SELECT}
    store.add_study("g1", "grid", cfg, "loraplace run grid.yaml")
    specs = [
        (_spec(m, task, p, lr, seed), m, task, p)
        for m in ("small", "big")
        for task in ("t1", "t2")
        for p in PLACEMENTS
        for lr in (0.001, 0.01)
        for seed in range(3)
    ]
    store.add_runs("g1", [s for s, *_ in specs])
    for spec, m, task, p in specs:
        _save(store, spec, m, task, p)
    store.close()
    return path


@pytest.fixture()
def grid(tmp_path) -> Path:
    return write_grid_store(tmp_path / "out" / "loraplace.db")


def test_cells_are_model_by_task_with_the_chosen_point_on_test(grid):
    cells = study_cells(read_study_data(grid))
    assert [c.key for c in cells] == [
        ("small", "t1"),
        ("small", "t2"),
        ("big", "t1"),
        ("big", "t2"),
    ]
    big = cells[2]
    m = big.measured
    assert (m.metric, m.higher_better, m.best, m.best_preset) == (
        "test_accuracy",
        True,
        "all-linear",
        "all-linear",
    )
    assert m.by_seed["mlp"] == {0: 0.4, 1: 0.5, 2: 0.5}
    # 9 finished runs x 2 s, and 9 pruned after 5 steps at 0.2 s per step
    assert m.seconds == pytest.approx(9 * SECONDS + 9 * RUNG_STEP * 0.2)
    assert (big.context.model, big.context.dataset, big.params) == ("ref-big", "data-t1", 5_000)
    assert [c.label for c in big.candidates] == PLACEMENTS


def test_first_rung_is_the_short_runs_prediction(grid):
    big_t1 = study_cells(read_study_data(grid))[2]
    rung = first_rung(big_t1.runs)
    assert rung is not None and rung.predictor == "short-runs"
    assert rung.scores == pytest.approx({"attention": -2.0, "mlp": -1.9, "all-linear": -2.1})
    assert rung.detail["step"] == RUNG_STEP
    # 18 runs (both grid points, 3 seeds, 3 placements) x 5 steps x 0.2 s
    assert rung.seconds == pytest.approx(18 * RUNG_STEP * 0.2)


def test_validate_scores_every_cell_with_the_studys_own_predictors(grid):
    doc = validate(grid, ["short-runs", "proxy"])
    cells = {(c["predictor"], c["model"], c["task"]): c for c in doc["cells"]}
    assert len(cells) == 6  # short runs on 4 cells, the proxy on the big model's 2
    assert doc["skipped"] == [
        {"predictor": "proxy", "model": "small", "task": "t1"},
        {"predictor": "proxy", "model": "small", "task": "t2"},
    ]
    rung = cells["short-runs", "big", "t1"]
    assert (rung["top1"], rung["best"], rung["metric"]) == ("mlp", "all-linear", "test_accuracy")
    assert rung["cost_fraction"] == pytest.approx(18 / 27)
    lost = [0.8 - 0.4, 0.7 - 0.5, 0.9 - 0.5]  # all-linear minus mlp, per seed
    sem = (sum((x - sum(lost) / 3) ** 2 for x in lost) / 2) ** 0.5 / 3**0.5
    assert rung["regret"] == pytest.approx(sum(lost) / 3)
    assert rung["regret_ci"] == pytest.approx(t.ppf(0.975, 2) * sem)
    ref = kendalltau([-2.0, -1.9, -2.1], [0.6, 14 / 30, 0.8])
    assert rung["tau"] == pytest.approx(ref.statistic)
    vs = rung["vs_preset"]
    assert (vs["chosen"], vs["best_preset"], vs["seeds"]) == ("mlp", "all-linear", 3)
    assert vs["p_t"] == pytest.approx(ttest_1samp(lost, 0.0, alternative="greater").pvalue)
    assert vs["p_wilcoxon"] == pytest.approx(wilcoxon(lost, alternative="greater").pvalue)
    # the small model's measured order (all-linear, mlp, attention) predicts the big one's
    proxy = cells["proxy", "big", "t1"]
    assert (proxy["top1"], proxy["regret"], proxy["cost_fraction"]) == ("all-linear", 0.0, 1.0)
    assert proxy["tau"] == pytest.approx(1 / 3)
    assert proxy["vs_preset"]["p_t"] == 1.0  # the best preset itself: nothing lost
    # on t2 the small model puts attention first, as the big one: regret 0 there too
    assert cells["proxy", "big", "t2"]["top1"] == "attention"


def test_summary_asks_for_three_of_four_cells(grid):
    doc = validate(grid, ["short-runs", "proxy"])
    within = {(c["predictor"], c["model"], c["task"]): c["within_noise"] for c in doc["cells"]}
    # short runs pick mlp everywhere: within noise on small/t1 and small/t2 only
    assert [within["short-runs", m, task] for m in SIZES for task in ("t1", "t2")] == [
        True,
        False,
        False,
        False,
    ]
    assert summary(doc) == (
        "No predictor's regret is within seed noise on at least 3 of 4 cell(s) "
        "(short-runs 1/4, proxy 2/2)."
    )


def test_recommend_check_per_cell_and_the_cli_prints_it(grid, capsys):
    doc = validate(grid, ["short-runs", "proxy"])
    rec = {(r["model"], r["task"]): r for r in doc["recommend"]}
    assert rec["big", "t1"]["predictor"] == "proxy"  # regret 0 beats short runs' 0.33
    assert rec["small", "t1"]["predictor"] == "short-runs"  # the only one scored there
    assert run_cli(["validate", str(grid.parent), "-p", "short-runs,proxy"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "No predictor's regret is within seed noise on at least 3 of 4 cell(s)" in said
    assert "big, t1: recommend follows proxy and picks all-linear; best preset all-linear" in said
    md = (grid.parent / "validation.md").read_text()
    assert "Regret in test_accuracy (higher is better) on small/t1, small/t2, big/t1, big/t2" in md


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple[Path, dict[str, str], str]:
    """A tiny GPT-2 and a tiny LLaMA (save_pretrained) and a text both tokenize."""
    from run_fixtures import write_text, write_tiny_llama, write_tiny_model

    tmp = tmp_path_factory.mktemp("validate-models")
    refs = {
        "gpt2": str(write_tiny_model(tmp / "gpt2")),
        "llama": str(write_tiny_llama(tmp / "llama")),
    }
    return tmp, refs, str(write_text(tmp / "g.txt"))


def _resolved_store(path: Path, refs: dict[str, str], data: str) -> Path:
    """Hand-made results of attention, mlp and all-linear on both models (resolved on each
    model's own modules), 2 seeds: all-linear best on both."""
    from loraplace.arch import describe, meta_from_config
    from loraplace.models import load_config
    from loraplace.placement import resolve
    from loraplace.predict.base import module_params

    loss = {"attention": [2.5, 2.6], "mlp": [2.4, 2.3], "all-linear": [2.0, 2.1]}
    store = Store(path)
    store.add_study("m1", "models", {"name": "models"}, "loraplace run models.yaml")
    runs = []
    for label, ref in refs.items():
        config = load_config(ref)
        arch = describe(meta_from_config(config), config)
        for p in PLACEMENTS:
            mods = resolve(p, arch).as_dicts()
            for seed in range(2):
                spec = RunSpec(
                    *("models", p, "lora", ref, data, seed),
                    train=TrainSettings(block_size=16),
                    modules=mods,
                    model_name=label,
                )
                metrics = {
                    "eval_loss": loss[p][seed],
                    "train_time_s": 1.0,
                    "total_params": {"gpt2": 100, "llama": 400}[label],
                    "trainable_params": sum(module_params(m) for m in mods),
                }
                runs.append((spec, metrics))
    store.add_runs("m1", [s for s, _ in runs])
    for spec, metrics in runs:
        store.mark_running(spec.run_id)
        store.save_result(RunResult(spec.run_id, "done", metrics))
    store.close()
    return path


@pytest.mark.slow  # about 15 s on a loaded 2-core host: two models written and probed
def test_model_predictors_run_on_each_models_own_weights(two_models, tmp_path):
    _, refs, data = two_models
    store = _resolved_store(tmp_path / "loraplace.db", refs, data)
    doc = validate(store, ["taylor", "plop", "proxy"])
    got = [(c["predictor"], c["model"], c["model_ref"], c["metric"]) for c in doc["cells"]]
    assert got == [
        ("taylor", "gpt2", refs["gpt2"], "eval_loss"),
        ("plop", "gpt2", refs["gpt2"], "eval_loss"),
        ("taylor", "llama", refs["llama"], "eval_loss"),
        ("plop", "llama", refs["llama"], "eval_loss"),
        ("proxy", "llama", refs["llama"], "eval_loss"),  # gpt2 is the smaller: its proxy
    ]
    assert all(c["seconds"] > 0 and c["study_seconds"] == 6.0 for c in doc["cells"][:4])
    nfn = {
        p["model"]: set(p["detail"]["nfn_by_type"])
        for p in doc["predictions"]
        if p["predictor"] == "plop"
    }
    assert nfn["gpt2"] == {"attn.qkv", "attn.o", "mlp.up", "mlp.down"}
    assert {"attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down"} <= nfn[
        "llama"
    ]
    # recommend reads the llama cell by its label or its reference, with its own settings
    from loraplace.predict.validate import best_validated

    for name in ("llama", refs["llama"]):
        best = best_validated(doc, name, data)
        assert best is not None and best["template"]["model"] == refs["llama"]


@pytest.mark.slow  # the tiny models are written and probed (about 15 s on a loaded host)
def test_recommend_picks_one_model_of_a_store_across_models(two_models, tmp_path, capsys):
    import json

    from loraplace.predict.validate import write

    _, refs, data = two_models
    store = _resolved_store(tmp_path / "out" / "loraplace.db", refs, data)
    assert run_cli(["recommend", str(store.parent), "-b", "99%"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {store} holds runs of 2 models (gpt2, llama): give --model NAME to "
        "recommend for one of them"
    )
    argv = ["recommend", str(store.parent), "-b", "99%", "--model", "llama", "--json"]
    assert run_cli(argv) == 0
    rec = json.loads(capsys.readouterr().out)
    assert (rec["source"], rec["placement"], rec["model"]) == (
        "measured",
        "all-linear",
        refs["llama"],
    )
    assert rec["expected_eval_loss"] == pytest.approx(2.05)
    # below every measured placement: the predictor that validated best on llama's cell
    write(validate(store, ["taylor", "out_norm"]), store.parent)
    argv = ["recommend", str(store.parent), "-b", "200", "--model", "llama", "--data", data]
    assert run_cli([*argv, "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["source"] == "predictor" and rec["model"] == refs["llama"]
    assert rec["followed"].startswith("followed predictor ")
    assert "best in the validation on study 'models' (1 cell(s))" in rec["followed"]


def _section(store: Path, study: str) -> tuple[str, list]:
    from loraplace.report.render import Document, TableBlock, to_markdown
    from loraplace.report.section_predictors import add_predictors_section

    doc, tables = Document(["t"]), []

    def table(t):
        tables.append(t)
        return TableBlock(t, len(tables))

    add_predictors_section(doc, table, store, study)
    return to_markdown(doc), tables


def test_report_section_gives_the_validation_table_beside_the_store(grid):
    from loraplace.predict.validate import write

    assert _section(grid, "grid") == ("# t\n", [])  # no validation.json: no section
    write(validate(grid, ["short-runs", "proxy"]), grid.parent)
    md, tables = _section(grid, "grid")
    assert "## Predictors" in md
    (t,) = tables
    assert [r["predictor"] for r in t.raw] == ["short-runs"] * 2 + ["short-runs", "proxy"] * 2
    row = t.rows[2]  # short runs on big/t1
    assert [str(x) for x in row] == [
        "short-runs",
        "big",
        "t1",
        "test_accuracy",
        "18.0",
        "0.667",
        "mlp",
        "all-linear",
        "-1.000",  # the rung's order is the measured one reversed
        "0.3333 ± 0.2868",
        "3",
    ]
    flat = " ".join(md.split()).replace("\\_", "_")
    assert (
        "No predictor's regret is within seed noise (its 95 % interval reaching 0) on at "
        "least 3 of the 4 cells (cells within noise: short-runs 1/4, proxy 2/2)." in flat
    )
    assert (
        "big, t1: recommend follows proxy and picks all-linear; the best preset is all-linear"
        in flat
    )
    # a validation of another study is not shown as this one's
    md, tables = _section(grid, "other")
    assert tables == [] and "validates study 'grid', not 'other'" in md
