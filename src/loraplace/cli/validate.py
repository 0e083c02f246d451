"""`loraplace validate`: each predictor's ranking checked against a finished study."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loraplace.cli.app import app

out = Console(highlight=False)

DEFAULT_PREDICTORS = "taylor,lora_grad,out_norm,plop,short-runs"


@app.command()
def validate(
    source: str = typer.Argument(..., help="a finished study's output dir or .db"),
    predictors: str = typer.Option(
        DEFAULT_PREDICTORS,
        "--predictors",
        "-p",
        help="comma-separated: taylor, lora_grad, out_norm, plop, short-runs, proxy",
    ),
    study: str | None = typer.Option(None, "--study", help="study name (default: the latest)"),
    proxy_model: str | None = typer.Option(
        None, "--proxy-model", help="the smaller model the proxy predictor trains on"
    ),
    short_fraction: float = typer.Option(
        0.1, "--short-fraction", help="share of the study's steps a short run trains"
    ),
    proxy_fraction: float = typer.Option(
        1.0, "--proxy-fraction", help="share of the study's steps a proxy run trains"
    ),
    seed: int = typer.Option(0, "--seed", help="seeds the probe batches and short runs"),
    out_dir: Path | None = typer.Option(
        None, "--out", "-o", help="where validation.md/.json/.csv go (default: the study's dir)"
    ),
) -> None:
    """Cost, top-1, Kendall's tau and regret of each predictor against the measured order."""
    from loraplace.predict.validate import preset_lines, summary, table_rows, write
    from loraplace.predict.validate import validate as run_validate
    from loraplace.store import resolve_store_path

    names = [p.strip() for p in predictors.split(",") if p.strip()]
    options = {
        "proxy_model": proxy_model,
        "short_fraction": short_fraction,
        "proxy_fraction": proxy_fraction,
    }
    doc = run_validate(source, names, options=options, study=study, seed=seed)
    paths = write(doc, out_dir or resolve_store_path(source).parent)
    t = Table(title=f"predictors against study {escape(doc['study'])}")
    cols = ("predictor", "model", "task", "cost frac.", "top-1", "best", "tau", "regret ± CI")
    for col in cols:
        t.add_column(col)
    for r in table_rows(doc):
        t.add_row(*(escape(x) for x in (r[0], r[1], r[2], r[4], r[5], r[6], r[8], r[9])))
    out.print(t)
    out.print(escape(summary(doc).replace("**", "")))
    for line in preset_lines(doc):
        out.print(escape(line))
    for p in paths:
        out.print(f"wrote {escape(str(p))}")
