"""Budgets: equal-budget rank matching and allocation of (layer, role, rank) from scores."""

from loraplace.budget.allocate import Allocation, allocate, allocation
from loraplace.budget.matching import (
    BudgetMatch,
    budget_match,
    match_all,
    match_budget,
    parse_budget,
)

__all__ = [
    "Allocation",
    "BudgetMatch",
    "allocate",
    "allocation",
    "match_all",
    "match_budget",
    "budget_match",
    "parse_budget",
]
