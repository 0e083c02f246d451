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
