"""The typer application object; command modules register their verbs on it."""

import typer

app = typer.Typer(
    name="loraplace",
    help="Where should LoRA adapters go? Plan, run, report and export placement studies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
