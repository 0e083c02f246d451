"""The accuracy headline of a study across models and tasks, on a small in-memory store:
placement x (model, task) test accuracy with CIs, zero-shot as a row, best per cell."""

from __future__ import annotations

from pathlib import Path

import pytest

from loraplace.analysis.accuracy_grid import accuracy_grid, paper_order
from loraplace.analysis.models import compare_models
from loraplace.analysis.read import RunRecord, StudyData
from loraplace.report.render import Document, to_markdown
from loraplace.report.section_accuracy import add_accuracy_section
from loraplace.report.section_context import SectionContext
from loraplace.report.section_models import add_models_section

MODELS = ("small", "big")
TASKS = ("names", "reverse")
PLACEMENTS = ("attention", "mlp", "all-linear")
# Test accuracy by (model, placement); validation accuracy is 0.1 on every run, so a table
# that read validation numbers shows 10.00 everywhere.
ACC = {
    ("small", "attention"): 0.20,
    ("small", "mlp"): 0.40,
    ("small", "all-linear"): 0.60,
    ("big", "attention"): 0.70,
    ("big", "mlp"): 0.50,
    ("big", "all-linear"): 0.30,
}
# Loss ranks the placements the other way round from accuracy on the small model.
LOSS = {("small", "attention"): 1.0, ("small", "mlp"): 2.0, ("small", "all-linear"): 3.0}
LOSS |= {("big", "attention"): 1.0, ("big", "mlp"): 2.0, ("big", "all-linear"): 3.0}


def _run(model, task, placement, seed, kind="lora"):
    # Seed noise that differs by placement, so paired differences have a spread.
    noise = (0.0, 0.02, 0.01)[seed] * (1 + PLACEMENTS.index(placement)) if kind == "lora" else 0
    acc = 0.05 if kind == "zero-shot" else ACC[model, placement] + noise
    loss = 5.0 if kind == "zero-shot" else LOSS[model, placement] + 0.01 * seed
    return RunRecord(
        run_id=f"{model}-{task}-{placement}-{seed}",
        placement=placement,
        kind=kind,
        seed=seed,
        status="done",
        diverged_step=None,
        error=None,
        spec={"task": task, "placement_base": placement, "model_name": model, "setting": {}},
        metrics={
            "eval_loss": loss + 0.5,
            "test_loss": loss,
            "task:answer": 0.1,
            "test_task:answer": acc,
            "accuracy": 0.1,
            "test_accuracy": acc,
            "total_params": 100.0 if model == "small" else 1000.0,
        },
    )


def _study() -> StudyData:
    runs = []
    for m in MODELS:
        for t in TASKS:
            runs.append(_run(m, t, "zero-shot", 0, kind="zero-shot"))
            runs += [_run(m, t, p, s) for p in PLACEMENTS for s in range(3)]
    config = {"select": {"by": "eval_loss"}}
    return StudyData(Path("x.db"), "sid", "acc", config, None, 0.0, runs)


def _report() -> str:
    mc = compare_models(_study())
    assert mc is not None
    fair = mc.fairs["small"]
    doc = Document(["acc"])
    r = SectionContext(fair.tasks[0].summary, {}, Path("figs"), "loss", fair, doc, mc)
    add_accuracy_section(r)
    add_models_section(doc, r.table, mc)
    return to_markdown(doc)


def test_accuracy_grid_covers_every_model_and_task_on_test():
    mc = compare_models(_study())
    assert mc is not None
    cells = accuracy_grid({m: mc.fairs[m] for m in mc.models})
    assert [(c.model, c.task) for c in cells] == [(m, t) for m in MODELS for t in TASKS]
    assert {c.metric for c in cells} == {"task:answer"}
    big = cells[2]
    assert big.best == "attention"
    rows = {r.placement: r.values["task:answer"] for r in big.rows}
    assert rows["zero-shot"].mean == pytest.approx(0.05)
    assert rows["attention"].mean == pytest.approx(0.71)
    assert rows["attention"].n == 3
    # Paired over three seeds with the same spread: a 20-point gap is significant.
    assert [b.other for b in big.tests] == ["zero-shot", "mlp", "all-linear"]
    assert all(b.test.p_holm is not None and b.test.p_holm < 0.05 for b in big.tests)


def test_report_gives_one_accuracy_table_across_models_and_tasks():
    md = _report()
    assert "## Accuracy across models and tasks" in md
    header = "| Placement | small · names | small · reverse | big · names | big · reverse |"
    assert header in md
    assert "| zero-shot | 5.00 (1 eval) | 5.00 (1 eval) | 5.00 (1 eval) | 5.00 (1 eval) |" in md
    assert "| all-linear | 63.00 ± 7.45 (3) | 63.00 ± 7.45 (3) | 33.00 ± 7.45 (3) |" in md
    assert "- big · names: attention is best by answer (71.00 ± 2.48 %); significantly" in md
    assert "10.00" not in md  # validation accuracy never reaches the headline
    from loraplace.report.section_accuracy import accuracy_pointer

    mc = compare_models(_study())
    assert mc is not None
    r = SectionContext(
        mc.fairs["big"].tasks[0].summary, {}, Path("f"), "loss", None, Document([]), mc
    )
    assert accuracy_pointer(r) == [
        "The headline, task accuracy on every model and task with 95 % CIs, is the "
        "Accuracy across models and tasks section."
    ]


def test_models_section_ranks_by_accuracy_and_checks_the_paper_order():
    md = _report()
    # By loss the small model would rank attention first; by accuracy all-linear is.
    assert "ranked the placements all-linear \\> mlp \\> attention" in md
    assert "by test accuracy on answer" in md
    assert "small reproduces all-linear \\> mlp \\> attention" in md
    assert "big does not" in md
    assert paper_order({"all-linear": 0.6, "mlp": 0.4, "attention": 0.2}) is True
    assert paper_order({"all-linear": 0.6, "mlp": 0.6, "attention": 0.2}) is False
    assert paper_order({"mlp": 0.6, "attention": 0.2}) is None


def test_equal_budget_gives_each_models_budget_and_counts():
    import dataclasses

    from loraplace.report.section_budget_models import add_budget_models_section

    params = {("small", p): n for p, n in zip(PLACEMENTS, (64, 48, 60), strict=True)}
    params |= {("big", p): n for p, n in zip(PLACEMENTS, (640, 600, 624), strict=True)}
    study = _study()
    runs = [
        dataclasses.replace(
            r, metrics={**r.metrics, "trainable_params": params[r.model, r.placement]}
        )
        if r.kind == "lora"
        else r
        for r in study.runs
    ]
    config = {**study.config, "budget": "attention@r8", "budget_per_role": True}
    study = dataclasses.replace(
        study, runs=runs, config=config, budget=64, model_budgets={"small": 64, "big": 640}
    )
    mc = compare_models(study)
    assert mc is not None
    doc = Document(["acc"])
    r = SectionContext(mc.fairs["small"].tasks[0].summary, {}, Path("f"), "loss", None, doc, mc)
    add_budget_models_section(r)
    md = to_markdown(doc)
    assert "trainable parameters: small 64, big 640." in md
    assert "| small | 64 | mlp | 48 | -25.00 % | 3 |" in md
    assert "| big | 640 | all-linear | 624 | -2.50 % | 3 |" in md
    assert "budget_per_role" in md
