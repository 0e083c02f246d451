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


# -- the fault catalogue's table (issue 26): cases per class, passed and failed --------

_FAULT_CLASSES = pytest.StashKey[dict]()  # nodeid -> class, of the items that will run


def fault_tally(classes: dict[str, str], outcomes: dict[str, str]) -> dict[str, tuple]:
    """class -> (cases, passed, failed), every fault-marked item once (each parametrized
    case is an item); an item that did not run (yet) is a case, neither passed nor failed."""
    tally: dict[str, list[int]] = {}
    for nodeid, kind in classes.items():
        row = tally.setdefault(kind, [0, 0, 0])
        row[0] += 1
        outcome = outcomes.get(nodeid)
        row[1] += outcome == "passed"
        row[2] += outcome == "failed"
    return {kind: tuple(row) for kind, row in sorted(tally.items())}


def fault_table(tally: dict[str, tuple]) -> list[str]:
    """The table's lines: a header, one line per class, the total."""
    width = max([len(k) for k in tally] + [5])
    lines = ["fault catalogue: class -> cases (passed/failed)"]
    for kind, (cases, passed, failed) in tally.items():
        lines.append(f"  {kind:<{width}}  {cases:>4} ({passed}/{failed})")
    total = [sum(row[i] for row in tally.values()) for i in range(3)]
    lines.append(f"  {'total':<{width}}  {total[0]:>4} ({total[1]}/{total[2]})")
    return lines


def pytest_collection_finish(session) -> None:
    """The fault class of every item that will run (after -k / -m deselection), all files."""
    classes = {}
    for item in session.items:
        marker = item.get_closest_marker("fault")
        if marker is not None:
            classes[item.nodeid] = marker.args[0] if marker.args else marker.kwargs["kind"]
    session.config.stash[_FAULT_CLASSES] = classes


def outcomes_of(stats: dict[str, list]) -> dict[str, str]:
    """nodeid -> "passed" | "failed" from the terminal reporter's reports: an error in
    setup or teardown fails a case whose call passed."""
    out = {r.nodeid: "passed" for r in stats.get("passed", []) if r.when == "call"}
    for key in ("failed", "error"):
        out.update({r.nodeid: "failed" for r in stats.get(key, [])})
    return out


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    classes = config.stash.get(_FAULT_CLASSES, {})
    if classes:
        terminalreporter.write_line("")
        outcomes = outcomes_of(terminalreporter.stats)
        for line in fault_table(fault_tally(classes, outcomes)):
            terminalreporter.write_line(line)
