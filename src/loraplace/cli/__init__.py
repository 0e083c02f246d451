"""The ``loraplace`` command: thin verbs, each one call into the library.

Each verb lives in its own module and registers itself on ``app``; importing them here
is what makes them appear. User errors become one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import sqlite3
import sys

from loraplace.cli.app import app
from loraplace.errors import UserError

# Command modules, imported for their registration side effect. Only the module of the
# verb that runs is imported; help (no verb, --help, an unknown verb) imports them all,
# and none of them imports torch (or the library) at module level.
_COMMAND_MODULES = [
    "plan",
    "data",
    "run",
    "report",
    "search",
    "recommend",
    "probe",
    "audit",
    "package",
    "validate",
]
# verb -> the module that defines it (a verb missing here still works: all are imported).
_VERB_MODULE = {
    "inspect": "plan",
    "plan": "plan",
    "export": "plan",
    "data": "data",
    "run": "run",
    "status": "run",
    "report": "report",
    "search": "search",
    "recommend": "recommend",
    "probe": "probe",
    "audit": "audit",
    "package": "package",
    "verify": "package",
    "validate": "validate",
}


def _verb(argv: list[str]) -> str | None:
    """The verb of a command line: its first word that is not an option."""
    return next((a for a in argv if not a.startswith("-")), None)


def _register(argv: list[str] | None = None) -> None:
    verb = _verb(sys.argv[1:] if argv is None else argv)
    module = _VERB_MODULE.get(verb or "")
    for name in [module] if module else _COMMAND_MODULES:
        importlib.import_module(f"loraplace.cli.{name}")


def _click_class(exc: BaseException) -> set[str]:
    """Names of the click classes exc derives from, from click or typer's bundled copy.

    typer >= 0.29 ships its own click (``typer._click``) whose exceptions are not
    subclasses of ``click.exceptions``; matching by name in either package covers both.
    """
    names = set()
    for cls in type(exc).__mro__:
        if cls.__module__.split(".")[0] in ("click", "typer"):
            names.add(cls.__name__)
    return names


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _usage_line(exc: BaseException) -> str:
    """One line: click's message and where help is, without the usage block."""
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or "loraplace"
    message = _one_line(exc.format_message())  # type: ignore[attr-defined]
    return f"error: {message} (see `{command} --help`)"


def _handle_click(exc: BaseException, kinds: set[str]) -> int:
    """Exit code for a click/typer exception, after printing what the user needs."""
    if "NoArgsIsHelpError" in kinds:
        # A bare group (`loraplace`, `loraplace data`): its help is the useful answer.
        # typer has printed it already (rich help); plain click leaves it in the message.
        text = exc.format_message()  # type: ignore[attr-defined]
        if text.strip():
            print(text, file=sys.stderr)
        return 2
    if "UsageError" in kinds:
        print(_usage_line(exc), file=sys.stderr)
        return 2
    if "Exit" in kinds:
        return int(getattr(exc, "exit_code", 0) or 0)
    if "Abort" in kinds:
        print("aborted", file=sys.stderr)
        return 130
    message = _one_line(exc.format_message())  # type: ignore[attr-defined]
    print(f"error: {message}", file=sys.stderr)
    return int(getattr(exc, "exit_code", 1) or 1)


def run_cli(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this directly)."""
    _register(argv)
    try:
        result = app(args=argv, standalone_mode=False, prog_name="loraplace")
    except UserError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 130
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, (sqlite3.ProgrammingError, sqlite3.IntegrityError)):
            raise  # our SQL is wrong: a bug, keep its traceback
        # The disk or the file failed us (full disk, I/O error, damaged or locked store).
        print(
            f"error: the results store failed: {_one_line(str(exc))}: free disk space or "
            "check the store's disk, then run again (finished runs are kept)",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:
        kinds = _click_class(exc)
        if not kinds & {"ClickException", "Exit", "Abort"}:
            raise  # a bug: keep its traceback
        return _handle_click(exc, kinds)
    return result if isinstance(result, int) else 0


def main() -> None:
    """Entry point of the console script."""
    sys.exit(run_cli())
