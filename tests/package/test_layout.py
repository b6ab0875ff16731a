"""The package's shape cannot drift: no import cycle, nothing outside ``cli/`` imports ``cli/``, modules stay
at most 400 lines (one responsibility each)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "radioactive"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Modules of the package imported by ``path`` (absolute and relative, at any depth of the file)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name.startswith("radioactive"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("radioactive"):
                out.add(target)
                out.update(f"{target}.{alias.name}" for alias in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        graph[name] = {target for target in _imports(path) if target in files and target != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), ignoring package ``__init__`` edges
    to their own submodules (re-exports), which Python resolves without a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def edges(node: str) -> set[str]:
        return {t for t in graph[node] if not t.startswith(node + ".")}

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges(node):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_cli_imports_cli():
    graph = _graph()
    offenders = {name: sorted(t for t in targets if t.startswith("radioactive.cli"))
                 for name, targets in graph.items()
                 if not name.startswith("radioactive.cli") and name != "radioactive.__main__"}
    assert {name: targets for name, targets in offenders.items() if targets} == {}


def test_modules_stay_small():
    sizes = {str(path.relative_to(PACKAGE)): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}


# The README's "How the code is laid out" table, top to bottom: a module imports only from its own row or
# the rows above it.
LAYERS = [
    {"errors", "_io", "stats", "distributed", "_stamps", "demo_defaults", "_progress"},
    {"data", "manifest"},
    {"fmnist", "fmnist_pairs", "_lists", "sources"},
    {"nets", "train"},
    {"key", "marker", "zoo"},
    {"augment", "_device", "_optimise", "mark", "_shard", "publish", "twins"},
    {"detect"},
    {"endpoint", "report", "report_keys", "plan"},
    {"experiment", "demo"},
    {"cli", "__main__"},
]


def _layer(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) < 2:
        return None  # the package root re-exports the API; it is no layer of its own
    return next((i for i, layer in enumerate(LAYERS) if parts[1] in layer), -1)


def test_imports_point_down_the_layers():
    graph = _graph()
    unplaced = sorted(name for name in graph if _layer(name) == -1)
    assert unplaced == [], "add these modules to LAYERS and to the README's layout table"
    upward = sorted((name, target) for name, targets in graph.items() for target in targets
                    if _layer(name) is not None and _layer(target) is not None and _layer(target) > _layer(name))
    assert upward == []
