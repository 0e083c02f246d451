"""The lm-eval task kind: lm-evaluation-harness's own score of a local custom task on the
model, against loraplace's ``choice`` kind on the same questions (both are log-likelihood
multiple choice), and the one-line error when the extra is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from run_fixtures import OBJECTS, SUBJECTS, VERBS, tiny_study, write_tiny_model

from loraplace.errors import UserError
from loraplace.study.read import validate_study
from loraplace.train.task_metrics import TaskMetricSettings, choice, run_tasks

torch.set_num_threads(1)


def _lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        print("skipped: lm_eval is not installed (pip install 'loraplace[eval]')")
        pytest.skip("lm_eval is not installed: pip install 'loraplace[eval]'")


def _task_dir(tmp: Path, docs: list[dict]) -> Path:
    """A custom multiple-choice task on a local JSON Lines file (no hub access)."""
    data = tmp / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{gold}}'\n"
        "metric_list:\n  - metric: acc\n"
    )
    return tmp


def test_lm_eval_agrees_with_the_choice_kind(tmp_path):
    _lm_eval()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = write_tiny_model(tmp_path / "tiny-gpt2")
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    docs = [
        {"question": f"{s} {v}", "choices": OBJECTS[:3], "gold": i % 3}
        for i, (s, v) in enumerate(zip(SUBJECTS, VERBS, strict=True))
    ]
    task = TaskMetricSettings(
        name="mc", kind="lm-eval", task="tiny_mc", include_path=str(_task_dir(tmp_path, docs))
    )
    got = run_tasks(model, tok, None, [task], "cpu")  # no instruction data needed
    v = tok.get_vocab()
    examples = [
        {
            "prompt_ids": [v[w] for w in d["question"].split()],
            "reference": d["choices"][d["gold"]],
            "choices": d["choices"],
        }
        for d in docs
    ]
    want = choice(model, tok, examples, TaskMetricSettings(name="c", kind="choice"), "cpu")
    assert got == {"task:mc": pytest.approx(want), "accuracy": pytest.approx(want)}
    assert want * len(docs) == round(want * len(docs))  # a count of 6 questions
    missing = TaskMetricSettings(name="x", kind="lm-eval", task="nope", include_path=str(tmp_path))
    with pytest.raises(UserError, match="lm-eval has no task 'nope'"):
        run_tasks(model, tok, None, [missing], "cpu")
    other = TaskMetricSettings(**{**task.__dict__, "metric": "f1"})
    with pytest.raises(UserError, match="reports no 'f1': set metric to one of acc"):
        run_tasks(model, tok, None, [other], "cpu")


def test_a_missing_extra_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "lm_eval" else real(n, *a)
    )
    cfg = tiny_study(tmp_path)
    cfg["eval"] = {"tasks": [{"name": "mc", "kind": "lm-eval", "task": "tiny_mc"}]}
    with pytest.raises(UserError) as exc:
        validate_study(cfg, "s.yaml")
    assert "pip install 'loraplace[eval]'" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_task_keys_at_their_defaults_keep_study_ids(tmp_path):
    cfg = tiny_study(tmp_path)
    cfg["eval"] = {"tasks": [{"name": "a", "kind": "exact_match"}]}
    study = validate_study(cfg, "s.yaml")
    assert study.eval_task_settings() == (
        {"name": "a", "kind": "exact_match", "max_new_tokens": 16, "stop": ["\n"]}
        | {"limit": None, "batch_size": 64},
    )


def test_a_study_stores_the_lm_eval_score_per_run(tmp_path):
    _lm_eval()
    import yaml

    from loraplace.cli import run_cli
    from loraplace.store import Store

    docs = [
        {"question": f"{s} {v}", "choices": OBJECTS[:3], "gold": 0}
        for s, v in zip(SUBJECTS, VERBS, strict=True)
    ]
    cfg = tiny_study(tmp_path, out=str(tmp_path / "out"), seeds=[0])
    task = {
        "name": "mc",
        "kind": "lm-eval",
        "task": "tiny_mc",
        "include_path": str(_task_dir(tmp_path, docs)),
    }
    cfg["eval"] = {"tasks": [task]}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert run_cli(["run", str(path)]) == 0
    with Store(tmp_path / "out") as store:
        runs = [r for r in store.runs() if r["status"] == "done"]
        metrics = store.metrics()
    assert len(runs) == 3  # zero-shot + 2 placements x 1 seed
    for r in runs:
        m = metrics[r["run_id"]]
        assert m["task:mc"] * 6 == round(m["task:mc"] * 6) and m["accuracy"] == m["task:mc"]
        assert "test_task:mc" not in m


def test_retain_tasks_give_learning_against_forgetting(tmp_path):
    _lm_eval()
    import csv

    import yaml

    from loraplace.cli import run_cli
    from loraplace.store import Store

    learn = [
        {"question": f"{s} {v}", "choices": OBJECTS[:3], "gold": 0}
        for s, v in zip(SUBJECTS, VERBS, strict=True)
    ]
    keep = [{**d, "gold": 1} for d in learn]
    (tmp_path / "keep").mkdir()
    _task_dir(tmp_path / "keep", keep)
    (tmp_path / "keep" / "tiny_mc.yaml").write_text(
        (tmp_path / "keep" / "tiny_mc.yaml").read_text().replace("task: tiny_mc", "task: tiny_keep")
    )
    # one placement x 2 seeds: the means over seeds are still checked by hand, in 3 runs, not 5
    cfg = tiny_study(tmp_path, out=str(tmp_path / "out"), placements=["seed-full"])
    cfg["eval"] = {
        "tasks": [
            {
                "name": "mc",
                "kind": "lm-eval",
                "task": "tiny_mc",
                "include_path": str(_task_dir(tmp_path, learn)),
            },
            {
                "name": "keep",
                "kind": "lm-eval",
                "task": "tiny_keep",
                "include_path": str(tmp_path / "keep"),
                "retain": True,
            },
        ]
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert run_cli(["run", str(path)]) == 0
    with Store(tmp_path / "out") as store:
        runs = {r["run_id"]: r for r in store.runs() if r["status"] == "done"}
        metrics = store.metrics()
    zs = next(metrics[i] for i, r in runs.items() if r["kind"] == "zero-shot")
    assert zs["accuracy"] == zs["task:mc"] and zs["retain_accuracy"] == zs["retain:keep"]
    assert "retain:keep" not in [k for k in zs if k.startswith("task:")]
    assert run_cli(["report", str(tmp_path / "out"), "--metric", "accuracy"]) == 0
    report = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "Learning against forgetting on tasks" in report
    rows = list(
        csv.DictReader((tmp_path / "out" / "report" / "tables" / "task_forgetting.csv").open())
    )
    for row in rows:  # each placement's mean gain and drop over its 2 seeds, by hand
        mine = [metrics[i] for i, r in runs.items() if r["placement"] == row["placement"]]
        gain = sum(m["accuracy"] - zs["accuracy"] for m in mine) / len(mine)
        drop = sum(zs["retain_accuracy"] - m["retain_accuracy"] for m in mine) / len(mine)
        assert float(row["learning_mean"]) == pytest.approx(gain)
        assert float(row["forgetting_mean"]) == pytest.approx(drop)
    assert [r["placement"] for r in rows] == ["seed-full"]
    assert len([r for r in runs.values() if r["placement"] == "seed-full"]) == 2


def test_a_retain_task_reads_its_own_data(tmp_path):
    cfg = tiny_study(tmp_path)
    cfg["eval"] = {"tasks": [{"name": "a", "kind": "choice", "retain": True}]}
    with pytest.raises(UserError, match="retain task 'a' must read its own data: use kind lm-eval"):
        validate_study(cfg, "s.yaml")
