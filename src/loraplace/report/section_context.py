"""What every report section reads and writes: the study's summary and analyses, the
document being built, and the numbering of its tables and figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from loraplace.analysis import Summary, paired_tests
from loraplace.analysis.fair import FairComparison
from loraplace.analysis.models import ModelComparison
from loraplace.analysis.stats import PairedTest
from loraplace.report import figures as figs
from loraplace.report import tables as tb
from loraplace.report.render import Document, FigureBlock, TableBlock


@dataclass
class SectionContext:
    """What every section reads: the study's summary and analyses, and the document,
    tables and figures being written (numbered in the order sections add them)."""

    s: Summary
    repro: dict
    fig_dir: Path
    metric: str
    fair: FairComparison | None
    doc: Document
    models: ModelComparison | None = None  # a study across models (its first model in s)
    tests: list[PairedTest] = field(init=False)
    tables: list[tb.Table] = field(default_factory=list)
    figures: list[figs.FigureFile] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tests = paired_tests(self.s)

    def table(self, t: tb.Table) -> TableBlock:
        self.tables.append(t)
        return TableBlock(t, len(self.tables))

    def figure(self, f: figs.FigureFile | None) -> None:
        if f is not None:
            self.figures.append(f)
            self.doc.add(FigureBlock(f, len(self.figures)))
