"""Session fixtures: an isolated loraplace cache, and the built-in tiny-markov model.

tiny-markov's weights ship inside the package (``loraplace/builtin/weights``), so no test
session pretrains it; ``tests/test_shipped.py`` checks those weights against their recorded
fingerprint and held-out loss, and (with LORAPLACE_TEST_REGENERATE=1) that pretraining
reproduces them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def running_in_ci() -> bool:
    """CI=true (as .ci/run and most CI services set it): every test must run."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def check_tool(name: str, present: bool, install: str) -> None:
    """Skip a test whose system tool is missing; fail it instead in CI, where a skip
    would leave the suite green without the test having run."""
    if present:
        return
    if running_in_ci():
        pytest.fail(f"{name} is not installed and CI runs every test: {install}", pytrace=False)
    pytest.skip(f"{name} is not installed ({install})")


def pytest_runtest_setup(item):
    # @pytest.mark.needs_tool(name, present, install): see check_tool.
    for mark in item.iter_markers("needs_tool"):
        check_tool(*mark.args)


@pytest.fixture(scope="session", autouse=True)
def loraplace_cache(tmp_path_factory) -> Path:
    """$LORAPLACE_CACHE as set by the user, else a temporary directory for this session."""
    if os.environ.get("LORAPLACE_CACHE"):
        yield Path(os.environ["LORAPLACE_CACHE"])
        return
    path = tmp_path_factory.mktemp("loraplace-cache")
    os.environ["LORAPLACE_CACHE"] = str(path)
    try:
        yield path
    finally:
        os.environ.pop("LORAPLACE_CACHE", None)


@pytest.fixture(scope="session")
def tiny_markov_dir(loraplace_cache) -> Path:
    """The directory of tiny-markov's shipped weights (read-only package data)."""
    from loraplace.builtin import builtin_model_dir

    return builtin_model_dir("tiny-markov")
