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


def task_metric(name: str) -> str:
    return f"{TASK_PREFIX}{name}"


def retain_metric(name: str) -> str:
    return f"{RETAIN_PREFIX}{name}"


def default_goal(metric: str) -> str:
    """Losses are minimised; every other metric (accuracy, exact match) is maximised."""
    return "min" if "loss" in metric or metric.endswith("ppl") else "max"
