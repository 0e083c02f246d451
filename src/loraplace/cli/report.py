"""``loraplace report``: rebuild the study's report from its results store alone."""

from __future__ import annotations

from pathlib import Path

import typer

from loraplace.cli.app import app


@app.command()
def report(
    store: Path = typer.Argument(
        Path("."), help="The study's output directory or its loraplace.db file."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Report directory (default: <store dir>/report)."
    ),
    study: str | None = typer.Option(
        None, "--study", help="Study name or id in the store (default: the most recent)."
    ),
    reference: str | None = typer.Option(
        None, "--reference", help="Placement to compare against (default: the largest)."
    ),
    pdf: str | None = typer.Option(
        None,
        "--pdf",
        help="Also write report.pdf: tex (report.tex with TeX), html (Chromium), or auto.",
    ),
    metric: str = typer.Option(
        "loss",
        "--metric",
        help="Headline metric: loss, or a task metric (accuracy = mean over eval.tasks, "
        "or a task's name).",
    ),
) -> int:
    """Write report.md, report.html, tables and figures for a study in the store."""
    from loraplace.report import build_report  # matplotlib loads only when a report is made

    if pdf is not None:
        from loraplace.report.pdf import check_pdf

        check_pdf(pdf)  # before the report is written
    res = build_report(store, out, study=study, reference=reference, metric=metric)
    typer.echo(
        f"report for study {res.study!r}: {res.out}/report.html "
        f"({len(res.files)} files, {res.seconds:.1f} s)"
    )
    if pdf is not None:
        from loraplace.report.pdf import make_pdf

        made = make_pdf(res.out, pdf)
        typer.echo(f"{made.path} ({made.engine})")
        for problem in made.problems:
            typer.echo(f"warning: {problem}", err=True)
    return 0
