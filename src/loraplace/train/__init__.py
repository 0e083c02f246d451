"""One run: inject adapters, train, evaluate, measure (a readable loop in ``loop.py``)."""

from loraplace.train.evaluate import EvalResult, evaluate
from loraplace.train.loop import Baseline, evaluate_base, train_run

__all__ = ["Baseline", "EvalResult", "evaluate", "evaluate_base", "train_run"]
