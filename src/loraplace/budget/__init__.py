"""Budgets: equal-budget rank matching and allocation of (layer, role, rank) from scores."""

from loraplace.budget.allocate import Allocation, allocate
from loraplace.budget.matching import (
    BudgetMatch,
    match_all,
    match_budget,
    parse_budget,
)

__all__ = [
    "Allocation",
    "BudgetMatch",
    "allocate",
    "match_all",
    "match_budget",
    "parse_budget",
]
