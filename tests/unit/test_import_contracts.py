"""The arrows between the rooms of the code, enforced by reading every module's imports.

``chatbatch`` is the domain: it imports neither ``worker`` nor ``cli`` (nor the simulator);
``worker`` imports neither ``cli`` nor the simulator; ``web`` (the dashboard) imports only
``chatbatch``; ``simulator`` stands alone, as a provider
would; ``migrations`` needs only ``chatbatch``. Inside ``chatbatch`` the rooms are layered, each
importing only its own room and those below it:

    errors, untrusted, redaction   the foundation: what everything may use
    rules                          pure rules, no I/O
    settings, logs                 configuration (settings parse rate-limit rules)
    store                          the database
    input, reporting               files into requests; the read side (neither imports the other)
    operations                     what is done to a batch as a whole (uses input and reporting)

and no two modules of ``chatbatch`` import each other in a cycle, not even for type checking.
Imports inside functions count for the arrows (they run all the same); for cycles only those
made when a module is loaded count, ``TYPE_CHECKING`` blocks included.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("chatbatch", "worker", "cli", "web", "simulator", "migrations")

# Which of our packages each package must never import, and why.
FORBIDDEN = {
    "chatbatch": (
        {"worker", "cli", "web", "simulator"},
        "the domain uses neither the engine nor a UI",
    ),
    "worker": ({"cli", "web", "simulator"}, "the engine serves every front end"),
    "web": ({"cli", "worker", "simulator"}, "the dashboard reads and acts through the domain"),
    "simulator": (
        {"chatbatch", "worker", "cli", "web", "migrations"},
        "it stands in for a provider",
    ),
    "migrations": (
        {"worker", "cli", "web", "simulator"},
        "the schema's history needs only the domain",
    ),
}

# The rooms of chatbatch, lowest first: a module may import its own room and the rooms below.
LAYERS = (
    {"chatbatch", "chatbatch.errors", "chatbatch.untrusted", "chatbatch.redaction"},
    {"chatbatch.rules"},
    {"chatbatch.settings", "chatbatch.logs"},
    {"chatbatch.providers"},
    {"chatbatch.store"},
    {"chatbatch.input", "chatbatch.reporting"},
    {"chatbatch.operations"},
)


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it stands, and whether it runs at load time."""

    importer: str
    target: str
    path: Path
    line: int
    at_load: bool  # module level (class bodies and TYPE_CHECKING blocks too), not in a function

    def __str__(self) -> str:
        where = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{where}:{self.line}: {self.importer} imports {self.target}"


def module_name(path: Path) -> str:
    """``chatbatch/store/reads.py`` → ``chatbatch.store.reads`` (a package is its folder)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules() -> dict[str, Path]:
    """Every module of our packages, by dotted name."""
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def imports_in(source: str, module: str, path: Path, *, is_package: bool = False) -> list[Import]:
    """Every import in ``source`` (of ``module``) as written, relative ones made absolute
    (``from a import b`` reaches ``a.b``: the module ``b`` or a name in ``a``)."""
    found: list[Import] = []
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST, at_load: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = at_load and not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            for target in _targets(child, package):
                found.append(Import(module, target, path, child.lineno, at_load))
            visit(child, inside)

    visit(ast.parse(source, filename=str(path)), True)
    return found


def _targets(node: ast.AST, package: str) -> list[str]:
    """The dotted names one import statement reaches (none for any other statement)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    return [base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names]


def resolved(target: str, modules: dict[str, Path]) -> str | None:
    """The module of ours that ``target`` names (its longest known prefix), None if not ours."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in modules:
            return name
    return None


def all_imports() -> Iterator[Import]:
    """Every import of one of our modules by one of our modules, resolved to that module."""
    modules = our_modules()
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for found in imports_in(path.read_text(), module, path, is_package=is_package):
            target = resolved(found.target, modules)
            if target is not None and target != module:
                yield Import(module, target, path, found.line, found.at_load)


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    """The whole import graph, read once."""
    return sorted(set(all_imports()), key=lambda i: (i.importer, i.line, i.target))


def in_chatbatch(module: str) -> bool:
    """Whether ``module`` is chatbatch or one of its modules."""
    return module.split(".")[0] == "chatbatch"


def room_of(module: str) -> str:
    """``chatbatch.store.reads`` → ``chatbatch.store``; a top-level module is its own room."""
    return ".".join(module.split(".")[:2])


def layer_of(room: str) -> int | None:
    """The room's place in LAYERS, None for a room the contract does not know."""
    return next((n for n, rooms in enumerate(LAYERS) if room in rooms), None)


def test_packages_import_only_downward(imports: list[Import]) -> None:
    """chatbatch imports neither worker nor cli, worker not cli, the simulator none of ours,
    migrations only chatbatch."""
    broken = []
    for found in imports:
        top, target_top = found.importer.split(".")[0], found.target.split(".")[0]
        banned, why = FORBIDDEN.get(top, (set(), ""))
        if target_top in banned:
            broken.append(f"{found} ({top} must not import {target_top}: {why})")
    if broken:
        pytest.fail("imports against the package arrows:\n" + "\n".join(broken))


def test_every_room_of_chatbatch_has_a_layer() -> None:
    """A new subpackage or top-level module must be given its place in LAYERS."""
    rooms = {room_of(m) for m in our_modules() if in_chatbatch(m)}
    unplaced = sorted(room for room in rooms if layer_of(room) is None)
    if unplaced:
        pytest.fail(f"rooms of chatbatch missing from LAYERS in {__file__}: {unplaced}")


def test_rooms_of_chatbatch_import_only_their_own_and_lower_rooms(imports: list[Import]) -> None:
    """rules only the foundation; store only rules and the top level; input and reporting store,
    rules and the top level; operations those too; nothing imports upward or sideways."""
    broken = []
    for found in imports:
        if not (in_chatbatch(found.importer) and in_chatbatch(found.target)):
            continue
        room, target_room = room_of(found.importer), room_of(found.target)
        mine, theirs = layer_of(room), layer_of(target_room)
        if room == target_room or mine is None or theirs is None:
            continue  # an unplaced room fails test_every_room_of_chatbatch_has_a_layer
        if theirs >= mine:
            allowed = sorted(set().union(*LAYERS[:mine]))
            broken.append(f"{found} ({room} may import only {', '.join(allowed)})")
    if broken:
        pytest.fail("imports against the layers of chatbatch:\n" + "\n".join(broken))


def test_no_import_cycles_in_chatbatch(imports: list[Import]) -> None:
    """No two modules of chatbatch reach each other through the imports made at load time."""
    graph: dict[str, list[Import]] = {}
    for found in imports:
        if found.at_load and in_chatbatch(found.importer) and in_chatbatch(found.target):
            graph.setdefault(found.importer, []).append(found)
    cycle = find_cycle(graph)
    if cycle is not None:
        pytest.fail("an import cycle in chatbatch:\n" + "\n".join(map(str, cycle)))


def find_cycle(graph: dict[str, list[Import]]) -> list[Import] | None:
    """One cycle of ``graph`` as the imports that close it, or None (depth-first search)."""
    done: set[str] = set()
    path: list[Import] = []
    on_path: dict[str, int] = {}

    def visit(module: str) -> list[Import] | None:
        on_path[module] = len(path)
        for edge in graph.get(module, []):
            if edge.target in on_path:
                return [*path[on_path[edge.target] :], edge]
            if edge.target not in done:
                path.append(edge)
                cycle = visit(edge.target)
                if cycle is not None:
                    return cycle
                path.pop()
        del on_path[module]
        done.add(module)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle is not None:
                return cycle
    return None


def test_the_reader_sees_every_kind_of_import() -> None:
    """Function-local, TYPE_CHECKING, relative and aliased imports are all found, so the
    contracts above cannot pass by reading too little."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import chatbatch.store.db as db\n"
        "from . import sibling\n"
        "from ..rules.states import RequestStatus\n"
        "if TYPE_CHECKING:\n"
        "    from worker.engine import Engine\n"
        "class Shown:\n"
        "    from cli import render\n"
        "def later():\n"
        "    from cli.context import settings\n"
        "    return lambda: __import__('os')\n"
    )
    path = ROOT / "chatbatch" / "reporting" / "example.py"
    found = {(i.target, i.at_load) for i in imports_in(source, "chatbatch.reporting.example", path)}
    assert {
        ("chatbatch.store.db", True),
        ("chatbatch.reporting.sibling", True),
        ("chatbatch.rules.states.RequestStatus", True),
        ("worker.engine.Engine", True),
        ("cli.render", True),
        ("cli.context.settings", False),
    } <= found


def test_a_cycle_is_found_and_named() -> None:
    """find_cycle reports the imports that close a cycle, file and line each."""
    a = Import("chatbatch.a", "chatbatch.b", ROOT / "chatbatch/a.py", 3, True)
    b = Import("chatbatch.b", "chatbatch.c", ROOT / "chatbatch/b.py", 4, True)
    c = Import("chatbatch.c", "chatbatch.b", ROOT / "chatbatch/c.py", 5, True)
    assert find_cycle({"chatbatch.a": [a], "chatbatch.b": [b], "chatbatch.c": [c]}) == [b, c]
    assert find_cycle({"chatbatch.a": [a], "chatbatch.b": [b]}) is None
    assert str(c) == "chatbatch/c.py:5: chatbatch.c imports chatbatch.b"
