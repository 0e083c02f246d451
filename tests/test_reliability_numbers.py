"""The fault catalogue, round 3 (issue 26): wrong or mislabelled numbers, and messages.

Each case is marked ``fault(<class>)`` so that the session's summary counts it in the
catalogue table (tests/conftest.py). The shared helpers are the catalogue's own
(tests/test_reliability.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_reliability import assert_cli_one_line, cli, one_run_study

# -- numbers: settings that would produce a wrong or mislabelled number ----------------

SELECT_AND_SPLITS = [
    (
        "select={by: accuracy}",
        "select.by 'accuracy' is a metric no run of this study stores: use one of "
        "eval_loss, eval_ppl (task metrics need eval.tasks)",
    ),
    (
        "select={by: eval_los}",
        "select.by 'eval_los' is a metric no run of this study stores "
        '(did you mean "eval_loss"?)',
    ),
    (
        "select={goal: max}",
        "select.goal 'max' contradicts select.by 'eval_loss', which is better when lower: "
        "use goal: min",
    ),
    (
        "train.test_fraction=1.5",
        "key 'train.test_fraction' must be in [0, 1) (0: no test split) (got 1.5)",
    ),
    ("train.test_fraction=-0.1", "key 'train.test_fraction' must be in [0, 1)"),
    ("train.test_fraction=.nan", "key 'train.test_fraction' must be in [0, 1)"),
    (
        "train.test_fraction=0.85",
        "train.test_fraction 0.85 and data.val_fraction 0.1 leave 5% of the examples to "
        "train on (at least 10% needed)",
    ),
    ("rank=[]", "rank is an empty list, a grid of no runs"),
    ("alpha=[]", "alpha is an empty list, a grid of no runs"),
    ("use_dora=[]", "use_dora is an empty list, a grid of no runs"),
    ("use_rslora=[]", "use_rslora is an empty list, a grid of no runs"),
    ("init_lora_weights=[]", "init_lora_weights is an empty list, a grid of no runs"),
    ("train.lr=[]", "train.lr is an empty list, a grid of no runs"),
]


@pytest.mark.fault("numbers")
@pytest.mark.parametrize(
    "override,needle", SELECT_AND_SPLITS, ids=[c[0] for c in SELECT_AND_SPLITS]
)
def test_a_setting_that_would_mislabel_numbers_is_one_line_before_any_write(
    tmp_path, capsys, override, needle
):
    study = one_run_study(tmp_path)
    assert_cli_one_line(cli(capsys, ["run", str(study), override]), needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.fault("numbers")
def test_select_by_a_bare_task_name_suggests_the_stored_metric(tmp_path, capsys):
    study = one_run_study(tmp_path)
    argv = ["run", str(study), "eval.tasks=[{name: answer}]", "select={by: answer}"]
    assert_cli_one_line(cli(capsys, argv), '(did you mean "task:answer"?)')


@pytest.mark.fault("numbers")
def test_select_accepts_every_metric_the_study_stores_in_its_direction():
    from run_fixtures import tiny_study

    from loraplace.study import validate_study

    base = tiny_study(Path("/nonexistent"), eval={"tasks": [{"name": "answer"}]})
    for select in (
        {"by": "eval_loss", "goal": "min"},
        {"by": "task:answer", "goal": "max"},
        {"by": "accuracy"},
    ):
        assert validate_study({**base, "select": select}).select.by == select["by"]


def _hot_grid(tmp_path: Path) -> Path:
    """tiny-markov at lr 0.01 and 1000 (1000 ends worse than zero-shot: see the hot test in
    test_reliability.py), selected on validation."""
    study = tmp_path / "hot.yaml"
    study.write_text(
        "name: hot\nmodel: tiny-markov\ndataset: markov-mix\nretain: null\n"
        "placements: [seed-ffn]\nrank: 4\nseeds: [0]\nselect: {by: eval_loss}\n"
        "train: {steps: 15, lr: [0.01, 1000], warmup_steps: 2, batch_size: 8,"
        " block_size: 64, precision: fp32}\n"
        "eval: {every: 0, max_blocks: 32}\nthreads: 1\n"
        f"out: {tmp_path / 'out'}\n"
    )
    return study


@pytest.mark.fault("numbers")
def test_with_select_the_report_still_lists_flagged_and_diverged_runs(tmp_path, capsys):
    from loraplace.store import Store

    code, _, err = cli(capsys, ["run", str(_hot_grid(tmp_path))])
    assert code == 0, err
    code, _, err = cli(capsys, ["report", str(tmp_path / "out"), "--out", str(tmp_path / "r")])
    assert code == 0, err
    report = " ".join((tmp_path / "r" / "report.md").read_text().split())
    with Store(tmp_path / "out", create=False, writer=False) as store:
        hot = [r for r in store.runs() if r["spec"]["train"]["lr"] == 1000]
    assert len(hot) == 1 and hot[0]["status"] in ("flagged", "diverged"), hot
    assert "Runs that contribute no numbers" in report
    # listed with its seed, status and hint, as without select
    assert f"| seed-ffn@lr1000 | 0 | {hot[0]['status']} |" in report
    assert "seed-ffn@lr1000 seed 0 " + hot[0]["status"] in report
    if hot[0]["status"] == "flagged":
        assert "1 run(s) trained to the end but finished with an eval loss" in report


@pytest.mark.fault("numbers")
def test_a_stored_selection_by_an_unstored_metric_claims_no_test_numbers(tmp_path, capsys):
    """A study stored before select.by was checked: its report shows validation numbers
    and says so, never the test-split claim nor a Selection section."""
    from run_fixtures import tiny_study

    from loraplace.analysis import read_study_data
    from loraplace.analysis.fair import compare
    from loraplace.driver import run_study
    from loraplace.store import Store
    from loraplace.study.schema import Study

    config = tiny_study(tmp_path, placements=["mlp-down"], select={"by": "accuracy"})
    config["train"].update(steps=3, lr=[0.01, 0.02], test_fraction=0.2)
    config["eval"]["every"] = 0
    run_study(Study.model_validate(config))  # the schema alone: as an older loraplace did
    code, _, err = cli(capsys, ["report", str(tmp_path / "out"), "--out", str(tmp_path / "r")])
    assert code == 0, err
    report = " ".join((tmp_path / "r" / "report.md").read_text().split())
    assert "test-split loss" not in report and "see the Selection section" not in report
    assert "Selection on validation" not in report
    assert "The study selects by accuracy, but no finished run stores it" in report
    with Store(tmp_path / "out", create=False, writer=False) as store:
        metrics = store.metrics()
        runs = [r for r in store.runs() if r["kind"] == "lora"]
    fair = compare(read_study_data(tmp_path / "out"))
    assert not fair.on_test and not fair.selections
    shown = {p.placement: p.loss.mean for p in fair.tasks[0].summary.placements}
    for lr in (0.01, 0.02):
        val = [metrics[r["run_id"]]["eval_loss"] for r in runs if r["spec"]["train"]["lr"] == lr]
        test = [metrics[r["run_id"]]["test_loss"] for r in runs if r["spec"]["train"]["lr"] == lr]
        assert shown[f"mlp-down@lr{lr:g}"] == pytest.approx(sum(val) / 2, rel=1e-12)
        assert shown[f"mlp-down@lr{lr:g}"] != pytest.approx(sum(test) / 2, rel=1e-6)


CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


@pytest.mark.fault("instruction-data")
@pytest.mark.parametrize("content,got", [(None, "null"), (42, "a int"), (["a"], "a list")])
def test_a_non_text_reply_names_file_and_record(tmp_path, capsys, content, got):
    rows = [
        {
            "messages": [
                {"role": "user", "content": "the cat"},
                {"role": "assistant", "content": "sees"},
            ]
        }
    ] * 3 + [
        {
            "messages": [
                {"role": "user", "content": "a dog"},
                {"role": "assistant", "content": content},
            ]
        }
    ]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    study = one_run_study(tmp_path, dataset=str(data), data={"chat_template": CHAT_TEMPLATE})
    assert_cli_one_line(
        cli(capsys, ["run", str(study)]),
        f"{data} record 4: the assistant message's content is {got}, not text",
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.fault("numbers")
def test_a_test_split_that_leaves_no_train_block_is_refused_not_clamped(tmp_path):
    from run_fixtures import write_text, write_tiny_model
    from transformers import AutoTokenizer

    from loraplace.data import load_blocks
    from loraplace.errors import UserError

    tok = AutoTokenizer.from_pretrained(write_tiny_model(tmp_path / "m"))
    data = str(write_text(tmp_path / "t.txt", n_sentences=20))
    plain = load_blocks(data, tok, 16)
    assert (plain.train.shape[0], plain.val.shape[0]) == (6, 1)
    assert load_blocks(data, tok, 16, test_fraction=0.6).train.shape[0] == 2  # 4 of 7 held out
    with pytest.raises(UserError, match="a test split of 6 \\(test_fraction 0.8\\) leaves none"):
        load_blocks(data, tok, 16, test_fraction=0.8)  # once clamped: trained on 1 block


# -- messages: what a run says must be true, and only loraplace's own lines ------------


@pytest.mark.fault("messages")
def test_the_halving_counter_never_passes_the_number_of_runs(tmp_path, capsys):
    from run_fixtures import tiny_study

    config = tiny_study(tmp_path, placements=["mlp-down"], seeds=[0], zero_shot=False)
    config["train"].update(steps=4, lr=[0.01, 0.02])
    config["eval"]["every"] = 0
    config["select"] = {"by": "eval_loss", "prune": "halving", "rungs": 2, "reduction": 2}
    study = tmp_path / "halving.yaml"
    study.write_text(yaml.safe_dump(config))
    code, out, err = cli(capsys, ["run", str(study)])
    assert code == 0, err
    import re

    # "[k/N] label seed 0: status ...": each run keeps its number at every rung.
    lines = re.findall(r"^\[(\d+)/(\d+)\] (\S+) seed 0: (\w+)", out, re.M)
    numbers = {label: f"{k}/{n}" for k, n, label, _ in lines}
    assert numbers == {"mlp-down@lr0.01": "1/2", "mlp-down@lr0.02": "2/2"}, out
    assert len(lines) == 5 and all(int(k) <= int(n) == 2 for k, n, _, _ in lines)
    # rung 1: both paused, one pruned; rung 2: the other paused, then trained to the end
    assert [status for *_, status in lines] == ["paused", "paused", "pruned", "paused", "eval"]
    assert "ran 2 of 2 runs" in out


@pytest.mark.fault("messages")
def test_two_tasks_on_the_same_data_are_refused_naming_both(tmp_path, capsys):
    from run_fixtures import tiny_study

    from loraplace.driver import run_study
    from loraplace.errors import UserError
    from loraplace.study.schema import Study

    config = tiny_study(tmp_path, placements=["mlp-down"], seeds=[0])
    data = config.pop("dataset")
    config["datasets"] = [{"name": "a", "dataset": data}, {"name": "b", "dataset": data}]
    study = tmp_path / "tasks.yaml"
    study.write_text(yaml.safe_dump(config))
    assert_cli_one_line(
        cli(capsys, ["run", str(study)]),
        f"tasks 'a' and 'b' both read {data}: their runs would be the same runs and one "
        "task would be dropped: keep one entry",
    )
    # The library, given a study the file checks never saw, refuses too (before writing).
    with pytest.raises(UserError, match="tasks 'a' and 'b' read the same data"):
        run_study(Study.model_validate(config))
    assert not (tmp_path / "out").exists()


ROLE_TYPOS = [
    (
        "attn.qkv+mlp.upp",
        "unknown role 'mlp.upp' in placement 'attn.qkv+mlp.upp' (did you mean 'mlp.up'?)",
    ),
    (
        "attn.qkvv+mlp.up",
        "unknown role 'attn.qkvv' in placement 'attn.qkvv+mlp.up' (did you mean 'attn.qkv'?)",
    ),
    (
        "mlp.down+attn.oo",
        "unknown role 'attn.oo' in placement 'mlp.down+attn.oo' (did you mean 'attn.o'?)",
    ),
]


@pytest.mark.fault("messages")
@pytest.mark.parametrize("placement,needle", ROLE_TYPOS, ids=[c[0] for c in ROLE_TYPOS])
def test_a_role_typo_is_blamed_on_the_typo(capsys, placement, needle):
    assert_cli_one_line(cli(capsys, ["plan", "tiny-markov", placement]), needle)


@pytest.mark.fault("messages")
def test_roles_beside_module_names_still_resolve(capsys):
    code, out, err = cli(capsys, ["plan", "tiny-markov", "lm_head+c_attn"])
    assert code == 0, err
    assert "lm_head+c_attn" in out


@pytest.mark.fault("messages")
def test_third_party_progress_and_warnings_stay_off_stderr(tmp_path):
    """The console script's stderr is empty for a probe (once a "Loading weights" bar) and
    for a run whose tokenizer is shorter than its examples and whose pad token ends its
    blocks (once a tokenizer length warning and an attention-mask warning)."""
    from concurrent.futures import ThreadPoolExecutor

    from run_fixtures import write_tiny_model
    from test_reliability import console_script

    model = write_tiny_model(tmp_path / "m")
    for name, key, value in (
        ("tokenizer_config", "model_max_length", 8),
        ("config", "pad_token_id", 0),
    ):
        path = model / f"{name}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    rows = [{"prompt": "the cat sees the moon . a dog eats", "completion": " a bone ."}] * 20
    data = tmp_path / "pc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    study = one_run_study(
        tmp_path,
        model=str(model),
        dataset=str(data),
        eval={"every": 0, "tasks": [{"name": "answer", "max_new_tokens": 3, "limit": 4}]},
    )
    calls = [["probe", "tiny-markov", "markov-mix"], ["run", str(study)]]
    with ThreadPoolExecutor(max_workers=2) as pool:
        probe, run = pool.map(lambda argv: console_script(argv, cwd=tmp_path), calls)
    assert (probe.returncode, probe.stderr, run.returncode, run.stderr) == (0, "", 0, "")
    assert "ran 1 of 1 runs" in run.stdout


@pytest.mark.fault("messages")
def test_a_killed_report_leaves_folders_the_next_report_removes(tmp_path, capsys):
    import os
    import signal
    import subprocess
    import sys

    from test_reliability import SRC

    from loraplace.report.build import _owned

    assert cli(capsys, ["run", str(one_run_study(tmp_path))])[0] == 0
    rep = tmp_path / "rep"
    code = (  # a report process killed while its work folder exists
        "import os, signal, tempfile; from pathlib import Path;"
        "from loraplace.report.build import _owned; out = Path(os.environ['REP']);"
        "d = Path(tempfile.mkdtemp(prefix=_owned(out, 'tmp') + '-', dir=out.parent));"
        "(d / 'report.md').write_text('half'); os.kill(os.getpid(), signal.SIGKILL)"
    )
    env = dict(os.environ, PYTHONPATH=SRC, REP=str(rep))
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == -signal.SIGKILL
    (stale,) = tmp_path.glob(".rep-tmp-*")
    live = tmp_path / (_owned(rep, "tmp") + "-live")  # this process: alive, not touched
    other = tmp_path / stale.name.replace(stale.name.split("-")[3], "0badc0de")  # another host
    for d in (live, other):
        d.mkdir()
    code, _, err = cli(capsys, ["report", str(tmp_path / "out"), "--out", str(rep)])
    assert code == 0, err
    assert (rep / "report.md").exists() and not stale.exists()
    assert sorted(p.name for p in tmp_path.glob(".rep-*")) == sorted([live.name, other.name])


@pytest.mark.fault("numbers")
def test_a_stored_goal_against_the_metric_still_selects_the_best():
    """A study stored before goal was checked, with goal max on eval_loss: the report's
    selection is the lowest validation loss, which is what it calls the best."""
    import dataclasses

    from test_selection import _grid_runs, _study

    from loraplace.analysis.fair import compare

    study = dataclasses.replace(
        _study(_grid_runs()), config={"select": {"by": "eval_loss", "goal": "max"}}
    )
    chosen = {s.placement: (s.chosen.label, s.goal) for s in compare(study).selections}
    assert chosen == {"attn": ("attn@lr0.01", "min"), "ffn": ("ffn@lr0.1", "min")}
