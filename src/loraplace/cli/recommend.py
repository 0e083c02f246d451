"""`loraplace recommend`: the best placement for a budget, measured or from probes."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loraplace.cli.app import app
from loraplace.errors import UserError
from loraplace.metrics import EVAL_LOSS

out = Console(highlight=False)


@app.command()
def recommend(
    source: str = typer.Argument(..., help="a study's output dir / .db, or a model"),
    budget: str = typer.Option(
        ..., "--budget", "-b", help="trainable params: 2M, 0.55%, seed-ffn@r16"
    ),
    data: str | None = typer.Option(
        None, "--data", help="dataset for probes; in a store, which task's runs to rank"
    ),
    fmt: str | None = typer.Option(
        None, "--format", "-f", help="export: peft|axolotl|llama-factory"
    ),
    out_dir: Path = typer.Option(Path("."), "--out", "-o", help="where the export goes"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    model: str | None = typer.Option(
        None, "--model", help="which model of a study across models (its name or reference)"
    ),
    validation: Path | None = typer.Option(
        None,
        "--validation",
        help="validation.json of `loraplace validate` (default: the store dir's, if any)",
    ),
) -> int:
    """The best placement for a budget: measured runs first, then probes."""
    from loraplace.placement.export import FORMATS, write_export
    from loraplace.recommend import placement_of, recommend_placement
    from loraplace.store import resolve_store_path

    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    rec = recommend_placement(source, budget, data, validation, model)
    rp = placement_of(rec)
    if as_json:
        print(json.dumps(rec.to_json(), indent=2))
    else:
        _print(rec)
    if fmt is not None:
        store = resolve_store_path(source)
        saved = _saved_weights(store, rec) if fmt == "peft" and store.exists() else None
        if saved is not None:  # the trained weights of the recommended placement's best run
            from loraplace.adapters import copy_saved

            paths = copy_saved(saved, out_dir)
        else:
            from loraplace.models import export_base, load_config
            from loraplace.placement.export_data import local_data_side
            from loraplace.placement.roundtrip import verified_export

            src = rec.data_source or {"dataset": data}
            side = local_data_side(
                src.get("dataset"), text_field=src.get("text_field", "text"), data=src.get("data")
            )
            # loaded back as the trainer reads it before anything is written
            base, note = export_base(rec.model)
            files, _ = verified_export(
                rp, fmt, load_config(rec.model), base_model=base, data=side, base_note=note
            )
            paths = write_export(files, out_dir)
        for path in paths:
            (out.print if not as_json else (lambda *_: None))(f"wrote {escape(str(path))}")
    return 0


def _print(rec) -> None:
    """The recommendation, its evidence and the measured alternatives, for a reader."""
    loss = (
        f"{rec.expected_loss:.4f}" + (f" ± {rec.ci95:.4f}" if rec.ci95 is not None else "")
        if rec.expected_loss is not None
        else "not measured"
    )
    out.print(
        f"[bold]recommended[/] for {rec.budget:,} params: [bold]{escape(rec.label)}[/] — "
        f"{rec.trainable_params:,} params, expected eval loss {loss} ({rec.source})"
    )
    out.print(f"  {escape(rec.followed)}")
    for e in rec.evidence:
        out.print(f"  • {escape(str(e))}")
    if rec.alternatives:
        t = Table(title="measured placements within the budget")
        for col in ("placement", "eval loss", "95 % CI", "seeds", "params"):
            t.add_column(col, justify="left" if col == "placement" else "right")
        for a in rec.alternatives:
            t.add_row(
                escape(a["placement"]),
                f"{a[EVAL_LOSS]:.4f}",
                f"{a['ci95']:.4f}" if a["ci95"] is not None else "—",
                str(a["n_seeds"]),
                f"{a['trainable_params']:,}",
            )
        out.print(t)


def _saved_weights(store_path: Path, rec) -> Path | None:
    """The saved adapter of the recommended placement's lowest-loss run, if one was kept."""
    from loraplace.adapters import best_saved
    from loraplace.store import Store

    if rec.source != "measured":
        return None
    with Store(store_path, create=False, writer=False) as store:
        runs = [
            r["run_id"]
            for r in store.runs()
            if r["placement"] == rec.label
            and r["status"] == "done"
            and r["kind"] == "lora"
            # the recommended model and data: another model's run may share the label
            and r["spec"]["model"] == rec.model
            and r["spec"]["dataset"] == rec.data_source.get("dataset", r["spec"]["dataset"])
        ]
        losses = {rid: m[EVAL_LOSS] for rid, m in store.metrics(runs).items() if EVAL_LOSS in m}
    return best_saved(store_path.parent, losses)
