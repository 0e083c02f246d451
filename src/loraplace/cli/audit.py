"""`loraplace audit`: what an existing PEFT adapter really adapts, before anyone trusts it."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from loraplace.cli.app import app

out = Console(highlight=False)


@app.command()
def audit(
    adapter_dir: Path = typer.Argument(..., help="a PEFT adapter directory"),
    model: str | None = typer.Option(
        None, "--model", "-m", help="base model (default: the adapter's base_model_name_or_path)"
    ),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Role x layer table, ranks and alphas in the weights, trainable count, warnings."""
    from loraplace.arch import ROLES
    from loraplace.audit import audit as run_audit

    result = run_audit(adapter_dir, model)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
        return
    out.print(
        f"[bold]{adapter_dir}[/]  base={result.base_model}  family={result.family or '?'}  "
        f"modules={len(result.units)}  trainable params={result.trainable_params:,}"
    )
    table = result.table()
    layers = sorted({x for cells in table.values() for x in cells}, key=lambda x: (x is None, x))
    t = Table(title="rank in the weights, by role x layer")
    t.add_column("role")
    for layer in layers:
        t.add_column("-" if layer is None else str(layer), justify="right")
    order = {r: i for i, r in enumerate(ROLES)}
    for role in sorted(table, key=lambda r: (":" in r, order.get(r.split(":")[-1], len(order)))):
        cells = table[role]
        t.add_row(role, *["/".join(map(str, sorted(cells.get(x, ())))) for x in layers])
    out.print(t)
    alphas = sorted({u.alpha for u in result.units})
    ranks = sorted({u.rank for u in result.units})
    out.print(f"ranks {ranks}  alphas {alphas}")
    for w in result.warnings:
        out.print(f"[yellow]warning[/]: {w}")
