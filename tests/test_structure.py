"""The package's shape, read from its source with ast (nothing is imported, no Redis).

- no import cycle among jobgrove's modules;
- only jobgrove/messaging talks to redis;
- jobgrove/core stays pure: no actors, Redis, sockets, threads or websockets;
- no module grows past MAX_LINES;
- imports point down the layers (LAYERS), never up or sideways;
- the README's architecture map names every module.

Every import counts, wherever it is written: inside a function or under
``if TYPE_CHECKING:`` it is still a dependency, only a deferred or hidden one.
"""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "jobgrove"
MAX_LINES = 400
CORE_FORBIDDEN = {"pykka", "redis", "socket", "threading", "simple_websocket"}
README = PACKAGE_DIR.parent / "README.md"
#: Each part of the package (a subpackage or a top-level module) and its layer: a part
#: imports only parts of lower layers (the README's Architecture section says so).
LAYERS = {
    "errors": 0, "_version": 0, "notify": 0,
    "core": 1,
    "messaging": 2, "jobs": 2, "config": 2,
    "targets": 3,
    "actors": 4,
    "endpoint": 5,
    "node": 6, "client": 6, "launcher": 6,
    "cli": 7,
    "": 8,  # jobgrove/__init__.py: the public API
    "__main__": 9,
}


@dataclass(frozen=True)
class Import:
    module: str  # as written, absolute: "redis", "jobgrove.core", "jobgrove.core.spec"
    names: tuple[str, ...]  # `from module import names`; empty for `import module`
    line: int


@dataclass(frozen=True)
class Module:
    name: str  # dotted: "jobgrove.jobs" for jobgrove/jobs/__init__.py
    path: Path
    is_package: bool
    lines: int
    imports: tuple[Import, ...]

    @property
    def where(self) -> str:
        return str(self.path.relative_to(PACKAGE_DIR.parent))


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _imports(tree: ast.AST, name: str, is_package: bool) -> tuple[Import, ...]:
    found = []
    # ast.walk reaches function bodies and `if TYPE_CHECKING:` blocks alike.
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                anchor = package[:len(package) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append(Import(base, tuple(a.name for a in node.names), node.lineno))
    return tuple(found)


@cache
def modules() -> dict[str, Module]:
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        name, is_package = _module_name(path)
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        found[name] = Module(name, path, is_package, len(text.splitlines()),
                             _imports(tree, name, is_package))
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


def import_edges() -> dict[str, dict[str, int]]:
    """module -> {imported jobgrove module: line of the first such import}.

    `import jobgrove.a.b` is an edge to jobgrove.a.b; `from jobgrove.a import x` one to
    jobgrove.a.x if that is a module, else to jobgrove.a (its __init__). A package's
    __init__ importing its submodules is therefore no cycle by itself; it becomes one
    when a submodule imports names from that __init__.
    """
    known = modules()
    edges: dict[str, dict[str, int]] = {name: {} for name in known}
    for mod in known.values():
        for imp in mod.imports:
            if _top(imp.module) != "jobgrove":
                continue
            targets = [f"{imp.module}.{n}" if f"{imp.module}.{n}" in known else imp.module
                       for n in imp.names] or [imp.module]
            for target in targets:
                # `import jobgrove.a.b.attr` cannot happen, but a module that no longer
                # exists can: point at the nearest existing enclosing module.
                while target not in known and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target != mod.name:
                    edges[mod.name].setdefault(target, imp.line)
    return edges


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm: the components of more than one node, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def one_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first search)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                return [*paths[v], start]
            if w in members and w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    raise AssertionError(f"no cycle through {start} in {component}")


def describe_cycle(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    known = modules()
    hops = [f"    {known[a].where}:{graph[a][b]} imports {b}"
            for a, b in itertools.pairwise(cycle)]
    return "\n".join([f"  {' -> '.join(cycle)}", *hops])


def test_the_package_is_parsed() -> None:
    # Guards the checks below against passing vacuously on a wrong path.
    names = modules()
    assert {"jobgrove", "jobgrove.core.spec", "jobgrove.messaging.store"} <= set(names)
    assert import_edges()["jobgrove"], "jobgrove/__init__.py imports nothing?"


def test_tarjan_finds_cycles() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}, "e": {"e": 5}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert one_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]


def test_relative_imports_resolve() -> None:
    tree = ast.parse("from . import x\nfrom ..core import spec\nfrom .y import z\n")
    imports = _imports(tree, "jobgrove.messaging.store", is_package=False)
    assert [i.module for i in imports] == ["jobgrove.messaging", "jobgrove.core",
                                           "jobgrove.messaging.y"]
    imports = _imports(ast.parse("from . import keys\n"), "jobgrove.messaging", True)
    assert imports[0].module == "jobgrove.messaging"


def test_no_import_cycles() -> None:
    graph = import_edges()
    components = strongly_connected(graph)
    report = [f"{len(c)} modules import each other: {', '.join(c)}; e.g.\n"
              f"{describe_cycle(graph, one_cycle(graph, c))}" for c in components]
    assert not components, "import cycles:\n" + "\n".join(report)


def test_only_messaging_imports_redis() -> None:
    offenders = [f"{mod.where}:{imp.line} imports {imp.module}"
                 for mod in modules().values()
                 if not (mod.name + ".").startswith("jobgrove.messaging.")
                 for imp in mod.imports if _top(imp.module) == "redis"]
    assert not offenders, "redis used outside jobgrove/messaging:\n  " + "\n  ".join(offenders)


def test_core_is_pure() -> None:
    offenders = [f"{mod.where}:{imp.line} imports {imp.module}"
                 for mod in modules().values()
                 if (mod.name + ".").startswith("jobgrove.core.")
                 for imp in mod.imports if _top(imp.module) in CORE_FORBIDDEN]
    assert not offenders, ("jobgrove/core must not use " + ", ".join(sorted(CORE_FORBIDDEN))
                           + ":\n  " + "\n  ".join(offenders))


def test_modules_stay_short() -> None:
    offenders = [f"{mod.where}: {mod.lines} lines" for mod in modules().values()
                 if mod.lines > MAX_LINES]
    assert not offenders, (f"modules longer than {MAX_LINES} lines (split them):\n  "
                           + "\n  ".join(offenders))


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_imports_point_down_the_layers() -> None:
    known = modules()
    unplaced = sorted({_part(name) for name in known} - set(LAYERS))
    assert not unplaced, f"parts of the package with no layer in LAYERS: {unplaced}"
    graph = import_edges()
    offenders = [f"{known[a].where}:{line} imports {b} (layer {LAYERS[_part(b)]} is not "
                 f"below {_part(a) or 'jobgrove'}'s {LAYERS[_part(a)]})"
                 for a, targets in graph.items() for b, line in targets.items()
                 if _part(a) != _part(b) and LAYERS[_part(b)] >= LAYERS[_part(a)]]
    assert not offenders, "imports that go up or sideways:\n  " + "\n  ".join(offenders)


def test_the_readme_map_names_every_module() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    missing = [mod.where for mod in modules().values()
               if not mod.is_package and mod.path.stem != "__main__"
               and not re.search(rf"\b{re.escape(mod.path.stem)}\b", block)]
    assert not missing, "modules the README's Architecture map does not name:\n  " \
        + "\n  ".join(missing)
