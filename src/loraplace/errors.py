"""The one exception type for mistakes a user can make and fix.

The CLI prints ``error: <message>`` on one line and exits with code 2 for these; every
other exception is a bug and keeps its traceback.
"""

import difflib


class UserError(Exception):
    """A problem the user caused and can fix: the message names both, on one line."""


def closest(name: str, choices, n: int = 1) -> str:
    """Return ' (did you mean "x"?)' for the closest spelling in choices, or ''."""

    matches = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f' (did you mean "{matches[0]}"?)' if matches else ""
