"""The names of the numbers a run stores, and which way each is better (torch-free).

The store, the analysis and the report read metrics by these names; a run writes them.
A task's score is ``task:<name>`` (``accuracy`` is the mean over a run's tasks), a retain
task's ``retain:<name>``, and every number measured on the test split is the validation
name with ``test_`` in front (``test_loss`` for ``eval_loss``).
"""

from __future__ import annotations

EVAL_LOSS = "eval_loss"  # token-weighted mean NLL on the validation split (nats)
EVAL_PPL = "eval_ppl"  # exp(eval_loss)
ACCURACY = "accuracy"  # mean task score over a run's (non-retain) tasks
TASK_PREFIX = "task:"  # a task's score: task:<name>
RETAIN_PREFIX = "retain:"  # a retain task's score: retain:<name>
RETAIN_ACCURACY = "retain_accuracy"  # the mean over a run's retain tasks
TEST_PREFIX = "test_"  # the same number on the test split
ZERO_SHOT_LOSS = "zero_shot_loss"  # the base model's eval_loss on the same tokens
FLOOR = "floor"  # the oracle's loss on the validation tokens (the lowest reachable)
EVAL_TOKENS = "eval_tokens"  # how many tokens eval_loss averages over
RETAIN_LOSS = "retain_loss"  # eval loss on the retain set (the base model's distribution)
RETAIN_ZERO_SHOT_LOSS = "retain_zero_shot_loss"  # the base model's loss there
# The test split's loss numbers: eval_loss is test_loss there (not test_eval_loss).
TEST_LOSS = "test_loss"
TEST_ZERO_SHOT_LOSS = "test_zero_shot_loss"
TEST_FLOOR = "test_floor"
TEST_TOKENS = "test_tokens"


def task_metric(name: str) -> str:
    return f"{TASK_PREFIX}{name}"


def retain_metric(name: str) -> str:
    return f"{RETAIN_PREFIX}{name}"


def metric_on_test(name: str) -> str:
    """A task metric's test-split name: task:x -> test_task:x."""
    return f"{TEST_PREFIX}{name}"


def default_goal(metric: str) -> str:
    """Losses are minimised; every other metric (accuracy, exact match) is maximised."""
    return "min" if "loss" in metric or metric.endswith("ppl") else "max"
