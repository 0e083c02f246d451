"""CI runs every test: a missing system tool (Chromium, TeX) skips a test on a
developer's machine but fails it under CI=true, so CI cannot stay green without it."""

from __future__ import annotations

import pytest
from conftest import check_tool


def test_a_missing_tool_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium is not installed"):
        check_tool("chromium", False, "apt-get install chromium")
    check_tool("chromium", True, "apt-get install chromium")  # present: runs


@pytest.mark.parametrize("value", ["true", "1"])
def test_a_missing_tool_fails_in_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="TeX is not installed and CI runs every"):
        check_tool("TeX", False, "apt-get install latexmk")
    check_tool("TeX", True, "apt-get install latexmk")
