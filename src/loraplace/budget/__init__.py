"""Budgets: equal-budget rank matching and allocation of (layer, role, rank) from scores."""

from loraplace.budget.allocate import Allocation, allocate, allocate_report
from loraplace.budget.matching import (
    BudgetMatch,
    match_all,
    match_budget,
    match_budget_report,
    parse_budget,
)

__all__ = [
    "Allocation",
    "BudgetMatch",
    "allocate",
    "allocate_report",
    "match_all",
    "match_budget",
    "match_budget_report",
    "parse_budget",
]
