"""`loraplace inspect`, `plan` and `export`: everything decided before training."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loraplace.builtin import is_builtin_model
from loraplace.cli.app import app
from loraplace.errors import UserError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def _arch(model: str, trust_remote_code: bool = False):
    """Shapes only: read from a LLaMA-style config.json, else the model on the meta device."""
    from loraplace.arch import describe, meta_from_config
    from loraplace.arch.config_json import describe_config_json
    from loraplace.models import _is_local, load_config, local_ref

    model = local_ref(model)  # a GGUF: its converted directory, whose config.json reads fast
    if not trust_remote_code and not is_builtin_model(model) and _is_local(model):
        arch = describe_config_json(model)  # no torch: seconds less for a 7B plan
        if arch is not None:
            return arch

    config = load_config(model, trust_remote_code=trust_remote_code)
    return describe(meta_from_config(config), config)


@app.command()
def inspect(
    model: str = typer.Argument(..., help="built-in name, local directory or hub id"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    trust_remote_code: bool = typer.Option(False, help="allow the model's own code to run"),
) -> None:
    """Layers x roles of a model with shapes and parameter counts (no weights loaded)."""
    from loraplace.arch import layout_summary

    arch = _arch(model, trust_remote_code)
    summary = layout_summary(arch)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    out.print(
        f"[bold]{escape(model)}[/]  family={arch.family}  layers={arch.n_layers}  "
        f"hidden={arch.hidden_size}  params={arch.base_params:,}"
    )
    if not arch.known:
        err.print(
            "[yellow]warning:[/] roles of this architecture could not be read; "
            "place adapters with target_modules patterns (module paths below)"
        )
    t = Table(title="adaptable linear layers by role")
    for col in (
        "role",
        "path in block",
        "in -> out",
        "layers",
        "weights / module",
        "LoRA r=1 / module",
    ):
        t.add_column(col, justify="right" if "/" in col else "left")
    for row in summary["roles"]:
        # other towers keep their own block index: say which tower a row is in
        role = row["role"] if row["tower"] == "language" else f"{row['tower']}:{row['role']}"
        experts = f"{row['experts']} x " if row["experts"] > 1 else ""
        t.add_row(
            role,
            row["path"],
            f"{experts}{row['in_features']} -> {row['out_features']}",
            row["layers"],
            f"{row['weight_params']:,}",
            f"{row['lora_params_per_rank']:,}",
        )
    out.print(t)
    if summary["per_layer"]:
        g = Table(title="layer x role (in -> out)")
        g.add_column("layer", justify="right")
        roles = summary["role_order"]
        for r in roles:
            g.add_column(r)
        for layer, cells in summary["per_layer"].items():
            g.add_row(str(layer), *[cells.get(r, "") for r in roles])
        out.print(g)


@app.command()
def plan(
    model: str = typer.Argument(..., help="built-in name, local directory or hub id"),
    placements: list[str] = typer.Argument(..., help="presets, roles (a+b) or module names"),
    rank: int | None = typer.Option(None, "--rank", "-r", help="LoRA rank for every module"),
    alpha: float | None = typer.Option(None, "--alpha", "-a", help="LoRA alpha (default 2r)"),
    layers: str | None = typer.Option(None, "--layers", help="all, 0-5, first:k, last:k, every:n"),
    experts: str | None = typer.Option(None, "--experts", help="routed experts: all, 0-7"),
    tower: str | None = typer.Option(None, "--tower", help="language | vision | projector"),
    dora: bool = typer.Option(False, "--dora", help="DoRA: count (and trace) its magnitudes"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    trust_remote_code: bool = typer.Option(False, help="allow the model's own code to run"),
    memory: bool = typer.Option(False, "--memory", help="estimate training memory per placement"),
    batch_size: int = typer.Option(16, "--batch-size", help="with --memory: sequences per step"),
    block_size: int = typer.Option(128, "--block-size", help="with --memory: tokens per sequence"),
    eval_batch_size: int = typer.Option(64, "--eval-batch-size", help="with --memory"),
    grad_accum: int = typer.Option(1, "--grad-accum", help="with --memory: micro-batches/step"),
    grad_checkpointing: bool = typer.Option(False, "--grad-checkpointing"),
    quantize: str | None = typer.Option(None, "--quantize", help="with --memory: 4bit | 8bit"),
) -> None:
    """Resolve placements: modules by role, exact trainable parameters, warnings."""
    from loraplace.placement import resolve

    arch = _arch(model, trust_remote_code)
    resolved = [
        resolve(
            p,
            arch,
            rank=rank,
            alpha=alpha,
            layers=layers,
            experts=experts,
            tower=tower,
            use_dora=dora,
        )
        for p in placements
    ]
    estimates = None
    if memory:
        settings = dict(batch_size=batch_size, block_size=block_size, grad_accum=grad_accum)
        settings["eval_batch_size"] = eval_batch_size
        estimates = _memory(model, resolved, settings, grad_checkpointing, quantize)
    if as_json:
        doc = [r.to_json() for r in resolved]
        for d, e in zip(doc, estimates or [], strict=False):
            d["memory_bytes"] = e.to_json()
        print(json.dumps({"model": model, "placements": doc}, indent=2))
        return
    out.print(f"[bold]{escape(model)}[/]  family={arch.family}  base params={arch.base_params:,}")
    kinds = arch.layer_kinds()
    if len(set(kinds.values())) > 1 or "ssm" in "".join(kinds.values()):  # a hybrid
        out.print("layers: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
    out.print(_summary_table(resolved))
    if estimates is not None:
        _print_memory(resolved, estimates)
    for rp in resolved:
        out.print(_role_table(rp))
        for w in rp.warnings:
            out.print(f"[yellow]warning[/] ({escape(rp.name)}): {escape(w)}")


def _summary_table(resolved: list) -> Table:
    summary = Table(title="placements")
    for col in ("placement", "modules", "trainable params", "% of total", "warnings"):
        summary.add_column(col, justify="right" if col != "placement" else "left")
    for rp in resolved:
        summary.add_row(
            escape(rp.name),
            str(len(rp.modules)),
            f"{rp.trainable_params:,}",
            f"{rp.trainable_pct:.2f} %",
            str(len(rp.warnings)),
        )
    return summary


def _role_table(rp) -> Table:
    """One placement's adapted modules, a row per role (towers other than language apart)."""
    from loraplace.arch import ROLES
    from loraplace.placement.resolve import _ranges

    t = Table(title=f"{escape(rp.name)}: adapted modules by role")
    for col in ("role", "paths", "modules", "layers", "ranks", "params"):
        t.add_column(col, justify="right" if col in ("modules", "params") else "left")
    ranks: dict[str, set[int]] = {}
    for m in rp.modules:
        ranks.setdefault(m.role, set()).add(m.rank)
        if m.tower != "language":
            ranks.setdefault(f"{m.tower}:{m.role}", set()).add(m.rank)
    by_role = sorted(rp.by_role().items(), key=lambda kv: ROLES.index(kv[0].split(":")[-1]))
    for role, v in by_role:
        t.add_row(
            role,
            escape(", ".join(sorted(v["paths"]))),
            str(v["modules"]),
            _ranges(sorted(v["layers"])) or "-",
            ",".join(str(r) for r in sorted(ranks[role])),
            f"{v['params']:,}",
        )
    return t


_MAX_TOKENS = 2**40  # tokens in one batch that --memory estimates (~10^12)
_MAX_BLOCK = 2**22  # 4M tokens: past any context; block^2 attention then overflows int64


def _memory(model: str, resolved: list, settings: dict, checkpointing: bool, quantize):
    """Training-memory estimates of the resolved placements (shapes only)."""
    from loraplace.models import load_config
    from loraplace.runs import TrainSettings
    from loraplace.train.memory_estimate import estimate_memory

    if quantize not in (None, "4bit", "8bit"):
        raise UserError(f"--quantize {quantize!r} is not 4bit or 8bit: use one of those")
    for option, key, least in (
        ("--batch-size", "batch_size", 1),
        ("--eval-batch-size", "eval_batch_size", 1),
        ("--block-size", "block_size", 2),  # a next-token loss needs 2 tokens
    ):
        if settings[key] < least:
            raise UserError(f"{option} {settings[key]} is too small: use at least {least}")
    TrainSettings(**settings)  # the same checks as a study's (grad_accum divides the batch)
    config = load_config(model)
    if settings["block_size"] > _MAX_BLOCK:
        raise UserError(
            f"--block-size {settings['block_size']:,} is longer than any model's context: "
            f"use at most {_MAX_BLOCK:,} (the model's own context is the real limit)"
        )
    tokens = max(settings["batch_size"], settings["eval_batch_size"]) * settings["block_size"]
    if tokens > _MAX_TOKENS:  # past this the shape arithmetic overflows, and no device holds it
        raise UserError(
            f"a batch of {tokens:,} tokens (batch size x --block-size) is past any device's "
            f"memory: keep it under {_MAX_TOKENS:,}"
        )
    kw = dict(settings, grad_checkpointing=checkpointing, quantize=quantize)
    return [estimate_memory(config, rp, **kw) for rp in resolved]


def _print_memory(resolved: list, estimates: list) -> None:
    t = Table(title="training memory estimate (MiB; fp32 activations, AdamW)")
    cols = ("weights", "adapter", "optimizer", "train_peak", "eval_peak")
    for col in ("placement", *cols, "run", "total"):
        t.add_column(col, justify="left" if col == "placement" else "right")
    for rp, e in zip(resolved, estimates, strict=True):
        values = [getattr(e, c) for c in cols] + [e.run_bytes, e.total]
        t.add_row(escape(rp.name), *(f"{v / 2**20:,.1f}" for v in values))
    out.print(t)
    out.print(
        "run = adapter + optimizer + the larger peak: what training adds to the loaded model "
        "(CPU runs record rss_growth_bytes); total = weights + run (CUDA: max_memory_allocated). "
        "On CPU, glibc may keep freed tensors in the heap, so RSS growth can read up to ~2x "
        "this; MALLOC_MMAP_THRESHOLD_=65536 makes it follow the tensors (benchmarks/RESULTS.md)"
    )


@app.command()
def export(
    model: str = typer.Argument(
        ..., help="built-in name, local directory or hub id; or a run id (trained weights)"
    ),
    placement: str | None = typer.Argument(
        None, help="preset, roles (a+b) or module names; none: MODEL is a run id"
    ),
    fmt: str = typer.Option("peft", "--format", "-f", help="peft | axolotl | llama-factory"),
    out_dir: Path = typer.Option(Path("."), "--out", "-o", help="directory to write into"),
    rank: int | None = typer.Option(None, "--rank", "-r"),
    alpha: float | None = typer.Option(None, "--alpha", "-a"),
    layers: str | None = typer.Option(None, "--layers"),
    experts: str | None = typer.Option(None, "--experts", help="routed experts: all, 0-7"),
    tower: str | None = typer.Option(None, "--tower", help="language | vision | projector"),
    dropout: float = typer.Option(0.0, "--dropout"),
    source: Path = typer.Option(
        Path("runs"), "--from", help="with a run id: the study output dir (or a dir of them)"
    ),
    data: str | None = typer.Option(
        None, "--data", help="the study's data file: axolotl/llama-factory carry its dataset keys"
    ),
    loss_on: str = typer.Option("completion", "--loss-on", help="completion | all (data.loss_on)"),
    study: Path | None = typer.Option(
        None, "--study", help="a study YAML: its data file, fields, mask and chat template"
    ),
) -> None:
    """Write the placement as a PEFT adapter_config.json or Axolotl / LLaMA-Factory YAML.

    The file is loaded back the way its trainer loads it and compared with the placement
    first: a file that would adapt anything else is an error, never written.

    ``loraplace export RUN_ID`` instead copies a run's trained adapter (safetensors and
    an adapter_config.json naming a loadable base model), as the study saved it.
    """
    from loraplace.arch import describe, meta_from_config
    from loraplace.models import export_base, load_config
    from loraplace.outdir import check_writable
    from loraplace.placement import resolve
    from loraplace.placement.export import FORMATS, write_export
    from loraplace.placement.roundtrip import verified_export

    check_writable(out_dir, "export directory", "--out")

    if placement is None:
        import re

        from loraplace.adapters import copy_saved, find_saved

        if not re.fullmatch(r"[0-9a-f]{4,16}", model):
            raise UserError(
                f"Missing argument 'PLACEMENT': give one after the model (loraplace export "
                f"{model} seed-ffn), or a run id alone to export its trained adapter"
            )

        for path in copy_saved(find_saved(model, source), out_dir):
            out.print(f"wrote {escape(str(path))}")
        return

    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    config = load_config(model)
    arch = describe(meta_from_config(config), config)
    rp = resolve(
        placement, arch, rank=rank, alpha=alpha, layers=layers, experts=experts, tower=tower
    )
    side = _export_data_side(data, study, loss_on) if fmt != "peft" else None
    base, note = export_base(model)
    files, serving = verified_export(
        rp, fmt, config, base_model=base, dropout=dropout, data=side, base_note=note
    )
    for path in write_export(files, out_dir):
        out.print(
            f"wrote {escape(str(path))} ({len(rp.modules)} modules, "
            f"{rp.trainable_params:,} trainable params; loaded back into PEFT as {fmt} "
            "reads it: same modules, ranks and alphas)"
        )
    for w in serving:
        err.print(f"[yellow]serving[/]: {escape(w)}")
    for w in rp.warnings:
        err.print(f"[yellow]warning[/]: {escape(w)}")


def _export_data_side(data: str | None, study: Path | None, loss_on: str):
    """The data side an Axolotl / LLaMA-Factory export carries: from the study's settings,
    or a plain data file with --loss-on; None without either."""
    from loraplace.placement.export_data import data_side

    if loss_on not in ("completion", "all"):
        raise UserError(f"--loss-on {loss_on!r}: use completion or all")
    if study is not None:  # the study's own data settings, as its runs read them
        from loraplace.study.read import load_study

        s = load_study(study)
        task = s.tasks[0]
        return data_side(task.dataset, text_field=task.text_field, data=s.data_settings())
    return None if data is None else data_side(data, data={"loss_on": loss_on})
