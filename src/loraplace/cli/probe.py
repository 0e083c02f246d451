"""`loraplace probe`: importance scores per (layer, role) before any training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loraplace.cli.app import app

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def _slug(text: str) -> str:
    """A file-name-safe form of a model or dataset reference."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(text).name or text).strip("_") or "x"


@app.command()
def probe(
    model: str = typer.Argument(..., help="built-in name, local directory or hub id"),
    data: str = typer.Argument(..., help="built-in dataset, local file or HF dataset id"),
    batches: int = typer.Option(4, "--batches", "-n", help="batches of blocks to score on"),
    batch_size: int = typer.Option(8, "--batch-size", help="blocks per batch"),
    block_size: int | None = typer.Option(
        None, "--block-size", "-L", help="tokens per block (default: min(128, context))"
    ),
    seed: int = typer.Option(0, "--seed", help="picks the blocks: same seed, same scores"),
    split_seed: int = typer.Option(0, "--split-seed", help="the data's train/val split"),
    text_field: str = typer.Option("text", "--text-field", help="text column of the data"),
    out_dir: Path = typer.Option(Path("probes"), "--out", "-o", help="where PNG + JSON go"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output on stdout"),
) -> None:
    """Score every (layer, role) on a few batches: tables per score and a heatmap PNG."""
    from loraplace.outdir import check_free, check_writable
    from loraplace.probe import SCORES
    from loraplace.probe import probe as run_probe
    from loraplace.probe.panels import heatmap

    stem = f"probe_{_slug(model)}_{_slug(data)}_s{seed}"
    check_writable(out_dir, "probe directory", "--out")  # before the model loads
    check_free([out_dir / f"{stem}.png", out_dir / f"{stem}.json"])
    result = run_probe(
        model,
        data,
        batches=batches,
        batch_size=batch_size,
        block_size=block_size,
        seed=seed,
        split_seed=split_seed,
        text_field=text_field,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    png = heatmap(result, out_dir / f"{stem}.png")
    doc = result.to_json()
    doc["files"] = {"heatmap": str(png), "json": str(out_dir / f"{stem}.json")}
    (out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if as_json:
        print(json.dumps(doc, indent=2))
        return

    meta = result.meta
    out.print(
        f"[bold]{escape(model)}[/] on [bold]{escape(data)}[/]: {meta['tokens']:,} tokens in "
        f"{meta['batches']} "
        f"batches (seed {seed}), {meta['seconds']:.2f} s"
    )
    roles = result.roles
    for name, info in SCORES.items():
        if name not in result.scores:
            continue
        arrow = "high" if info.higher_is_important else "low"
        t = Table(title=f"{name}: {info.description} ({arrow} = adapt here)")
        t.add_column("layer", justify="right")
        for role in roles:
            t.add_column(role, justify="right")
        for layer, cells in result.grid(name).items():
            t.add_row(str(layer), *[_num(cells.get(role)) for role in roles])
        summary = result.role_summary(name)
        t.add_section()
        t.add_row("mean", *[_num(summary.get(role)) for role in roles])
        order = f"  role order: {' > '.join(result.role_ranking(name))}"
        if info.extensive:  # sums over the weights: also per parameter a rank costs
            per_lora = result.role_summary(name, per="lora")
            t.add_row("mean / LoRA param", *[_num(per_lora.get(role)) for role in roles])
            order += f";  per LoRA param: {' > '.join(result.role_ranking(name, per='lora'))}"
        out.print(t)
        out.print(order)
    out.print(f"wrote {escape(str(png))} and {escape(str(doc['files']['json']))}")


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4g}"
