"""The house rules, checked: layers import downward, no import cycles, rooms of modest size.

Read from the source (no imports run), so a cycle hidden behind a lazy import counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = ("protocol", "orchestrator")
# The declarative catalogue, the seed's tables and the one state machine may be long.
LONG_ALLOWED = {"protocol/messages.py", "protocol/tables.py", "protocol/session.py"}
MAX_LINES = 500


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of our packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Our modules that ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # "from pkg import mod" imports the module pkg.mod when there is one.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycle_from(start: str, edges: dict[str, set[str]]) -> list[str] | None:
    path: list[str] = []
    on_path: set[str] = set()
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in on_path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        path.append(node)
        on_path.add(node)
        for nxt in sorted(edges[node]):
            if (found := visit(nxt)) is not None:
                return found
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    return visit(start)


def test_the_cycle_finder_finds_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycle_from("d", edges) == ["a", "b", "c", "a"]
    assert cycle_from("x", {"x": {"y"}, "y": set()}) is None


def test_no_import_cycle_among_our_modules() -> None:
    edges = graph()
    assert "orchestrator.pool" in edges["orchestrator.client"]  # the walk sees imports
    # Lazy imports count too, and a module importing its own package's __init__ (which
    # gathers the package's names) would loop through it.
    for name in sorted(edges):
        assert cycle_from(name, edges) is None, " -> ".join(cycle_from(name, edges) or [])


#: Leaf modules both sides use (serving an ASGI app): they import nothing of ours.
SHARED = ("orchestrator.asgi",)


def test_layers_import_downward_only() -> None:
    edges = graph()
    for name in SHARED:
        assert not {t for t in edges[name] if t.startswith(("protocol", "orchestrator"))}
    for name, targets in edges.items():
        if name.startswith("protocol"):
            assert all(t.startswith("protocol") for t in targets), (name, targets)
        if name.startswith("orchestrator.server"):
            # The server knows the protocol and itself, never the client's side.
            known = ("protocol", "orchestrator.server", *SHARED)
            outside = {t for t in targets if not t.startswith(known)}
            assert not outside, (name, outside)
        if name.startswith("orchestrator.ui"):
            # The page sits on the client; it never needs the server's image stack.
            assert not {t for t in targets if t.startswith("orchestrator.server")}, name
    # The pool and its connections meet only through the listener protocol.
    assert "orchestrator.pool" not in edges["orchestrator.connection"]
    assert "orchestrator.connection" not in edges["orchestrator.handle"]


def test_no_module_is_over_about_five_hundred_lines() -> None:
    long = {}
    for path in modules().values():
        relative = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and relative not in LONG_ALLOWED:
            long[relative] = lines
    assert long == {}
