"""The paper-ready report: tables, figures, report.md and report.html from the store alone."""

from loraplace.report.build import ReportOutput, build_report

__all__ = ["ReportOutput", "build_report"]
