"""One run: inject adapters, train, evaluate, measure (a readable loop in ``loop.py``)."""

from loraplace.train.baseline import Baseline, evaluate_base
from loraplace.train.evaluate import EvalResult, evaluate
from loraplace.train.loop import train_run

__all__ = ["Baseline", "EvalResult", "evaluate", "evaluate_base", "train_run"]
