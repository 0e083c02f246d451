"""The store's schema comment names every run status runs.RunStatus defines (it listed 7 of 9)."""

from __future__ import annotations

import re
import typing

from loraplace import store
from loraplace.runs import RunStatus


def test_schema_comment_lists_every_run_status():
    text = store._SCHEMA
    start = text.index("status TEXT NOT NULL")
    comment = " ".join(re.findall(r"--([^\n]*)", text[start : text.index("diverged_step")]))
    assert set(comment.replace("runs.RunStatus:", "").split()) == set(typing.get_args(RunStatus))
