"""The layer's modules form a tree of imports that point one way (ARCHITECTURE.md).

Every import counts, a lazy one inside a function too: a circle broken only by importing late
is still a circle to whoever changes either side.
"""

from __future__ import annotations

import ast
from pathlib import Path

LAYER = Path(__file__).resolve().parents[2] / "layers" / "common"
PACKAGE = "voucher_distributor"

#: Which rooms a room may import (besides itself and third-party libraries).
ALLOWED = {
    "models": set(),
    "domain": {"models"},
    "adapters": {"domain", "models"},
    "settings": set(),
    "sqs_batch": set(),
    "pipeline": {"adapters", "domain", "models", "settings"},
    "api": {"pipeline", "adapters", "domain", "models", "settings"},
    "runtime": {"pipeline", "adapters", "domain", "models", "settings", "sqs_batch"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LAYER).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in (LAYER / PACKAGE).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for named in targets:
                # The longest module of ours that the import names (a name in a module, or it).
                target = named
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(f"{target}."):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_layer_has_no_import_circle() -> None:
    assert cycles(import_graph()) == []


def test_a_circle_is_found() -> None:
    """The checker itself: a made-up circle of three is reported, a tree is not."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_point_one_way() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if _room(module) in ALLOWED
        and _room(target) != _room(module)
        and _room(target) not in ALLOWED[_room(module)]
        and target != PACKAGE
    ]
    assert wrong == []


def test_the_layer_never_imports_the_cli() -> None:
    for path in (LAYER / PACKAGE).rglob("*.py"):
        text = path.read_text()
        assert "voucher_distributor_cli" not in text, path
