"""Functions fit on a screen: none in src/ is over 80 lines (the issue-13 rule).

A function that is clearer whole goes in ALLOWED with the reason; the list starts empty.
"""

import ast
from pathlib import Path

import loraplace

MAX_LINES = 80
ALLOWED: dict[str, str] = {}  # "module.py:function" -> why it is clearer whole


def _long_functions(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                key = f"{path.relative_to(root).as_posix()}:{node.name}"
                if n > MAX_LINES and key not in ALLOWED:
                    found.append(f"{key} ({n} lines)")
    return found


def test_no_function_in_src_is_over_80_lines():
    assert _long_functions(Path(loraplace.__file__).parent) == []


def test_the_check_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "m.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}\n")
    assert _long_functions(tmp_path) == [f"m.py:long ({MAX_LINES + 1} lines)"]


MAX_REPORT_MODULE_LINES = 400  # issue 25: the report is a package of section modules


def _long_modules(root: Path, limit: int) -> list[str]:
    counts = {p.name: len(p.read_text().splitlines()) for p in sorted(root.glob("*.py"))}
    return [f"{name} ({n} lines)" for name, n in counts.items() if n > limit]


def test_no_report_module_is_over_400_lines():
    root = Path(loraplace.__file__).parent / "report"
    assert _long_modules(root, MAX_REPORT_MODULE_LINES) == []


def test_the_check_finds_a_long_module(tmp_path):
    (tmp_path / "short.py").write_text("x = 1\n")
    (tmp_path / "long.py").write_text("x = 1\n" * (MAX_REPORT_MODULE_LINES + 1))
    assert _long_modules(tmp_path, MAX_REPORT_MODULE_LINES) == ["long.py (401 lines)"]
