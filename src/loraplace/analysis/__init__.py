"""Analysis of a study from the results store: seeds, tests, fronts, importance, consistency.

Every function takes the plain records of ``read_study_data`` and knows nothing of plotting.
"""

from loraplace.analysis.aggregate import (
    Estimate,
    PlacementSummary,
    Summary,
    ZeroShot,
    estimate,
    summarize,
)
from loraplace.analysis.agreement import KendallW, RankTable, kendall_w, rank_table
from loraplace.analysis.consistency import Consistency, consistency
from loraplace.analysis.equivalence import Tost, Verdict, tost_paired, verdicts
from loraplace.analysis.importance import Importance, importance
from loraplace.analysis.pareto import Efficiency, Front, Guideline, efficiency, fronts, guidelines
from loraplace.analysis.read import RunRecord, StudyData, read_study_data
from loraplace.analysis.stats import PairedTest, holm, paired_tests

__all__ = [
    "Consistency",
    "Efficiency",
    "Estimate",
    "Front",
    "KendallW",
    "Guideline",
    "Importance",
    "PairedTest",
    "PlacementSummary",
    "RankTable",
    "RunRecord",
    "StudyData",
    "Summary",
    "Tost",
    "Verdict",
    "ZeroShot",
    "consistency",
    "efficiency",
    "estimate",
    "fronts",
    "guidelines",
    "holm",
    "importance",
    "kendall_w",
    "read_study_data",
    "paired_tests",
    "rank_table",
    "summarize",
    "tost_paired",
    "verdicts",
]
