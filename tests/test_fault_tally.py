"""The fault catalogue's table (tests/conftest.py): cases per class, across files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import fault_table, fault_tally, outcomes_of


class _Report:
    def __init__(self, nodeid: str, when: str = "call"):
        self.nodeid, self.when = nodeid, when


def test_tally_counts_cases_passes_and_failures_per_class():
    classes = {"a.py::t[1]": "store", "a.py::t[2]": "store", "b.py::u": "cli", "b.py::v": "store"}
    stats = {
        "passed": [_Report("a.py::t[1]"), _Report("b.py::u"), _Report("b.py::v")],
        "failed": [_Report("a.py::t[2]")],
        "error": [_Report("b.py::v", "teardown")],  # its call passed, its teardown did not
        "skipped": [],
    }
    outcomes = outcomes_of(stats)
    assert outcomes == {
        "a.py::t[1]": "passed",
        "a.py::t[2]": "failed",
        "b.py::u": "passed",
        "b.py::v": "failed",
    }
    assert fault_tally(classes, outcomes) == {"cli": (1, 1, 0), "store": (3, 1, 2)}
    assert fault_tally(classes, {}) == {"cli": (1, 0, 0), "store": (3, 0, 0)}  # not run yet
    assert fault_table({"cli": (1, 1, 0), "store": (3, 1, 2)}) == [
        "fault catalogue: class -> cases (passed/failed)",
        "  cli       1 (1/0)",
        "  store     3 (1/2)",
        "  total     4 (2/2)",
    ]


def test_the_summary_table_counts_marked_cases_of_every_file(tmp_path):
    """A real pytest session over two files: parametrized cases count one each."""
    here = Path(__file__).parent
    shutil.copy(here / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    fault(kind): a fault case\n")
    (tmp_path / "test_one.py").write_text(
        "import pytest\n"
        "@pytest.mark.fault('numbers')\n"
        "@pytest.mark.parametrize('x', [1, 2, 3])\n"
        "def test_p(x):\n    assert x != 3\n"
        "def test_unmarked():\n    pass\n"
    )
    (tmp_path / "test_two.py").write_text(
        "import pytest\n"
        "@pytest.mark.fault('messages')\n"
        "def test_m():\n    pass\n"
        "@pytest.mark.fault(kind='numbers')\n"
        "def test_n():\n    pass\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout  # test_p[3] fails on purpose
    table = done.stdout[done.stdout.index("fault catalogue:") :].splitlines()[:4]
    assert table == [
        "fault catalogue: class -> cases (passed/failed)",
        "  messages     1 (1/0)",
        "  numbers      4 (3/1)",
        "  total        5 (4/1)",
    ]
