"""Importing loraplace's training stack prints nothing: a run's stderr is for the user's news."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest


@pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed"
)
def test_peft_with_bitsandbytes_installed_imports_silently():
    code = "import loraplace, peft, bitsandbytes"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "kernels-community" not in done.stderr
    assert "Failed to load" not in done.stderr
