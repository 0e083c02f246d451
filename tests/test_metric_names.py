"""Metric names are spelled once, in loraplace.metrics (issue 25 item 2).

The store, analysis, report and train rooms read and write metrics through its constants;
a bare "eval_loss" there is how a renamed or misspelt metric silently reads as missing.
"""

import ast
from pathlib import Path

import loraplace
from loraplace import metrics

ROOMS = (
    "analysis",
    "executors",
    "report",
    "study",
    "train",
    "store.py",
    "run_table.py",
    "driver.py",
    "cli",
    "recommend.py",
    "predict",
    "adapters.py",
    "package/retrain.py",
    "search",
)
# "accuracy" and "floor" are also plain words (a table's file name, a row label): not checked.
NAMES = {
    metrics.EVAL_LOSS,
    metrics.EVAL_PPL,
    metrics.EVAL_TOKENS,
    metrics.ZERO_SHOT_LOSS,
    metrics.RETAIN_LOSS,
    metrics.RETAIN_ZERO_SHOT_LOSS,
    metrics.RETAIN_ACCURACY,
    metrics.TEST_LOSS,
    metrics.TEST_ZERO_SHOT_LOSS,
    metrics.TEST_FLOOR,
    metrics.TEST_TOKENS,
    metrics.TEST_PREFIX,
    metrics.TASK_PREFIX,
    metrics.RETAIN_PREFIX,
}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            out.add(id(body[0].value))
    return out


def _bare_names(root: Path, rooms: tuple[str, ...]) -> list[str]:
    found = []
    for room in rooms:
        paths = [root / room] if room.endswith(".py") else sorted((root / room).rglob("*.py"))
        for path in paths:
            tree = ast.parse(path.read_text())
            docs = _docstrings(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and node.value in NAMES and id(node) not in docs:
                    found.append(
                        f"{path.relative_to(root).as_posix()}:{node.lineno} {node.value!r}"
                    )
    return found


def test_the_store_analysis_report_and_train_spell_no_metric_name():
    assert _bare_names(Path(loraplace.__file__).parent, ROOMS) == []


def test_the_check_finds_a_bare_name_and_skips_docstrings(tmp_path):
    (tmp_path / "m.py").write_text(
        '"""Reads eval_loss."""\n\n\ndef f(m):\n    """eval_loss"""\n'
        '    return m["eval_loss"], f"task:{m}"\n'
    )
    assert _bare_names(tmp_path, ("m.py",)) == ["m.py:6 'eval_loss'", "m.py:6 'task:'"]


def test_stored_names_are_unchanged():
    """Old stores must read the same: these strings are on disk in every store."""
    assert (metrics.EVAL_LOSS, metrics.EVAL_PPL, metrics.ACCURACY) == (
        "eval_loss",
        "eval_ppl",
        "accuracy",
    )
    assert (metrics.TEST_LOSS, metrics.TEST_FLOOR, metrics.RETAIN_LOSS) == (
        "test_loss",
        "test_floor",
        "retain_loss",
    )
    assert metrics.task_metric("answer") == "task:answer"
    assert metrics.metric_on_test(metrics.task_metric("answer")) == "test_task:answer"
