"""The typer application object; command modules register their verbs on it."""

import typer

app = typer.Typer(
    name="loraplace",
    help="Where should LoRA adapters go? Plan, run, report and export placement studies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _group() -> None:
    # A typer app with one command runs it as the whole program; the CLI imports only the
    # verb that runs, so this callback keeps ``loraplace VERB`` a group with subcommands.
    pass
