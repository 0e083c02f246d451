"""The packages of loraplace form layers: no import cycle among them, lazy imports included.

A lazy (function-level) import hides a cycle from the interpreter but not from a reader:
each room should depend only on rooms below it. The graph is read from the source (AST),
so this test imports nothing of the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "loraplace"


def _room(module: str) -> str | None:
    """loraplace.train.loop -> train; loraplace.store -> store; loraplace -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "loraplace" else None


def import_graph(src: Path = SRC) -> dict[str, dict[str, str]]:
    """{room: {room it imports: "file:line" of one such import}}, every import counted."""
    graph: dict[str, dict[str, str]] = {}
    for path in sorted(src.rglob("*.py")):
        me = _room(".".join(("loraplace", *path.relative_to(src).with_suffix("").parts)))
        if me is None or me.startswith("__"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "loraplace":
                    targets = [a.name for a in node.names]
                else:
                    targets = [_room(node.module)]
            elif isinstance(node, ast.Import):
                targets = [_room(a.name) for a in node.names]
            else:
                continue
            for t in targets:
                if t and t != me:
                    graph.setdefault(me, {}).setdefault(t, f"{path.name}:{node.lineno}")
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, {}):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_a_planted_cycle():
    graph = {"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}, "d": {"a": ""}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": ""}, "b": {}, "c": {"a": ""}}) is None


def test_graph_reads_lazy_and_package_imports():
    graph = import_graph()
    assert "placement" in graph["train"]  # train/inject.py: a lazy lora_config import
    assert "builtin" in graph["models"]  # a built-in model loads like any other
    assert "train" not in graph.get("builtin", {})


def test_no_import_cycle_among_packages():
    graph = import_graph()
    cycle = find_cycle(graph)
    where = [graph[a][b] for a, b in zip(cycle, cycle[1:], strict=False)] if cycle else []
    assert cycle is None, f"import cycle {' -> '.join(cycle or [])} at {where}"


def _is_sql_call(node: ast.AST) -> bool:
    """``x.execute("...")`` / ``executescript`` with literal text, or ``sqlite3.connect``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    name = node.func.attr
    if name == "connect":
        return "sqlite" in ast.unparse(node.func)
    text = node.args[0] if node.args else None
    literal = isinstance(text, ast.JoinedStr) or (
        isinstance(text, ast.Constant) and isinstance(text.value, str)
    )
    return name in ("execute", "executescript", "executemany") and literal


def sql_outside_store(src: Path = SRC) -> list[str]:
    """Places other than store.py that open a database or send it SQL text."""
    found = []
    for path in sorted(src.rglob("*.py")):
        if path.name == "store.py" and path.parent == src:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if _is_sql_call(node):
                found.append(f"{path.relative_to(src)}:{node.lineno}")
    return found


def test_only_the_store_speaks_sql():
    assert sql_outside_store() == []


def test_sql_outside_store_finds_a_planted_query(tmp_path):
    (tmp_path / "store.py").write_text("")
    (tmp_path / "x.py").write_text(
        "import sqlite3\nc = sqlite3.connect('a')\nc.execute('SELECT 1')\n"
        "c.execute(f'SELECT {t}')\nengine.execute(fig)\n"
    )
    assert sql_outside_store(tmp_path) == ["x.py:2", "x.py:3", "x.py:4"]
