"""The ``loraplace`` command: thin verbs, each one call into the library.

Each verb lives in its own module and registers itself on ``app``; importing them here
is what makes them appear. User errors become one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import sys

from loraplace.cli.app import app
from loraplace.errors import UserError

# Command modules, imported for their registration side effect. A module that is not
# written yet is skipped so that the rest of the CLI keeps working.
_COMMAND_MODULES = ["plan", "data", "run", "report", "recommend", "probe"]


def _register() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(f"loraplace.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"loraplace.cli.{name}":
                raise


def run_cli(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this directly)."""
    import click

    _register()
    try:
        result = app(args=argv, standalone_mode=False, prog_name="loraplace")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except click.exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    return result if isinstance(result, int) else 0


def main() -> None:
    """Entry point of the console script."""
    sys.exit(run_cli())
