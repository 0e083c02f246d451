"""The package's version is written once per place it must appear, and they agree."""

import re
from pathlib import Path

import loraplace

ROOT = Path(__file__).resolve().parents[1]


def test_version_matches_pyproject_and_the_changelog():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    declared = re.search(r'^version = "([^"]+)"', pyproject, re.M)
    assert declared is not None and declared.group(1) == loraplace.__version__ == "0.2.0"
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{loraplace.__version__}]" in changelog
