"""`loraplace data info`: what a dataset becomes once tokenised and packed."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loraplace.builtin import BUILTIN_MODELS, builtin_model_dir
from loraplace.cli.app import app
from loraplace.data import registered_dataset
from loraplace.models import local_ref
from loraplace.quiet import quiet_transformers

data_app = typer.Typer(
    help="Inspect datasets: documents, tokens, blocks and the floor.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
out = Console(highlight=False)


# Natural text with no model named is packed with this built-in's tokenizer.
DEFAULT_TEXT_MODEL = "tiny-python"


def _tokenizer_and_context(dataset: str, model: str | None, trust_remote_code: bool):
    """The tokenizer and context length to pack with: the model's, or a sensible default."""
    from loraplace.data import dataset_kind  # data.tokenized: tokenisation, torch
    from loraplace.models import load_config

    dataset_kind(dataset)  # an unknown name fails here, before any tokenizer is built
    registered = registered_dataset(dataset)
    model = model or (registered.model if registered else DEFAULT_TEXT_MODEL)
    config = load_config(model, trust_remote_code=trust_remote_code)  # also checks the ref
    context = getattr(config, "n_positions", None) or getattr(
        config, "max_position_embeddings", None
    )
    # Pre-tokenised data is ids of its model's vocabulary already: no tokenizer.
    pretokenized = registered is not None and registered.pretokenized
    tokenizer = None if pretokenized else _model_tokenizer(model, trust_remote_code)
    return tokenizer, context


def _model_tokenizer(model: str, trust_remote_code: bool):
    """A model's tokenizer without loading its weights (or pretraining a built-in)."""
    from transformers import AutoTokenizer

    quiet_transformers()
    builtin = BUILTIN_MODELS.get(model)
    if builtin is not None and builtin.tokenizer is not None:
        return builtin.tokenizer()  # the very tokenizer its pretraining saves
    if builtin is not None:
        model = str(builtin_model_dir(model))
    model = local_ref(model)  # a GGUF: the tokenizer saved beside its converted weights
    return AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)


@data_app.command()
def info(
    name: str = typer.Argument(..., help="built-in name, local .txt/.jsonl/.parquet/.csv, HF id"),
    model: str = typer.Option(
        None, "--model", "-m", help="model whose tokenizer packs the text (default tiny-python)"
    ),
    block_size: int = typer.Option(128, "--block-size", help="tokens per block"),
    split_seed: int = typer.Option(0, "--split-seed", help="seed of the train/val split"),
    text_field: str = typer.Option("text", "--text-field", help="field holding the text"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    trust_remote_code: bool = typer.Option(False, help="allow the model's own code to run"),
) -> None:
    """Documents, tokens and train/val blocks of a dataset, and its floor where known."""
    from loraplace.data import load_blocks

    tokenizer, context = _tokenizer_and_context(name, model, trust_remote_code)
    blocks = load_blocks(
        name,
        tokenizer,
        block_size,
        split_seed=split_seed,
        text_field=text_field,
        max_context=context,
    )
    summary = {
        "dataset": name,
        "documents": blocks.n_docs,
        "tokens": blocks.n_tokens,
        "block_size": blocks.block_size,
        "train_blocks": int(blocks.train.shape[0]),
        "val_blocks": int(blocks.val.shape[0]),
        "floor": blocks.floor,
        "fingerprint": blocks.fingerprint,
    }
    if tokenizer is not None:
        registered = registered_dataset(name)
        summary["tokenizer_of"] = model or (registered.model if registered else DEFAULT_TEXT_MODEL)
    for key in ("python_version", "content_sha256", "generator", "format", "scored_tokens"):
        if key in blocks.info:
            summary[key] = blocks.info[key]
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    table = Table(title=f"{escape(name)}  (block size {blocks.block_size})", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row("documents", f"{blocks.n_docs:,}")
    table.add_row("tokens", f"{blocks.n_tokens:,}")
    table.add_row("train blocks", f"{summary['train_blocks']:,}")
    table.add_row("val blocks", f"{summary['val_blocks']:,}")
    table.add_row(
        "floor (nats/token)", "unknown" if blocks.floor is None else f"{blocks.floor:.4f}"
    )
    for key in ("tokenizer_of", "python_version", "generator", "format", "scored_tokens"):
        if key in summary:
            table.add_row(key.replace("_", " "), escape(str(summary[key])))
    table.add_row("fingerprint", blocks.fingerprint[:16])
    out.print(table)
