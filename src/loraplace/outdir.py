"""Whether an output location can be written: checked before any work, in one line.

Every verb that writes (run, search, report, package, export, probe) asks here first, so
a read-only directory, or a file where a directory is expected, costs no training, no
report and no half-written output.
"""

from __future__ import annotations

import os
from pathlib import Path

from loraplace.errors import UserError


def check_writable(path: Path, what: str, option: str = "--out DIR") -> None:
    """``path`` (a directory, made later if missing) can be made and written.

    Tried in its nearest existing ancestor with a file that is removed at once.
    what: how the one line names the location ("output directory", "report directory").
    """
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{what} {path}: {existing} is a file: choose another {option}")
    marker = existing / f".loraplace-write-{os.getpid()}"
    try:
        marker.touch()
        marker.unlink()
    except OSError as exc:
        raise UserError(
            f"{what} {path} cannot be written ({exc.strerror} in {existing}): "
            f"choose a writable one with {option}"
        ) from None


def check_free(paths: list[Path], option: str = "--out") -> None:
    """None of ``paths`` (files about to be written) is a directory: a write into one would
    fail after the others were written."""
    for path in paths:
        if path.is_dir():
            raise UserError(
                f"{path} is a directory, where a file is to be written: "
                f"move it, or choose another {option}"
            )
