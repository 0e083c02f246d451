"""Predictors of the best placement, and their validation against measured studies.

Every predictor has one interface (``base.py``): (context: model, data, budget;
candidate placements) -> a ranking and its cost in seconds. The probes and PLoP are in
``probes.py``; short runs and the proxy model in ``training.py``; where candidates come
from in ``candidates.py``; the check against a finished study in ``validate.py``.
Importing this package imports no torch.
"""

from loraplace.predict import probes, training  # noqa: F401  (they register themselves)
from loraplace.predict.base import (
    PREDICTORS,
    Candidate,
    Context,
    Prediction,
    PredictorInfo,
    check_predictors,
    run_predictor,
)

__all__ = [
    "PREDICTORS",
    "Candidate",
    "Context",
    "Prediction",
    "PredictorInfo",
    "check_predictors",
    "run_predictor",
]
