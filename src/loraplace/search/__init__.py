"""Search over placements (Optuna), each trial an ordinary run in the store."""

from loraplace.search.optuna_search import (
    SearchOutcome,
    SearchSpace,
    default_storage,
    propose,
    run_search,
    space_for,
)

__all__ = [
    "SearchOutcome",
    "SearchSpace",
    "default_storage",
    "propose",
    "run_search",
    "space_for",
]
