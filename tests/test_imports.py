"""The package's modules import one another in one direction.

Three checks:

- one layer order (``LAYERS``, lowest first): a module imports only from its own
  package, from lower layers and, among the foundation modules, from one another. EVERY
  import of ``superalign`` code counts: module level, inside functions and under
  ``if TYPE_CHECKING:``. Command-line modules (``cli.py`` and every ``_cli.py`` /
  ``*_cli.py``) sit on top: they may import anything, and only they may import them;
- no private import across packages: another package's private module (a path segment
  after the package starting with ``_``) or a private name is never imported; a
  package's ``__init__`` is its public API;
- no cycle among module-level imports, and each module imports in a fresh interpreter.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import superalign

ROOT = Path(superalign.__file__).parent
PACKAGE = "superalign"

# The layer order, lowest first. A module belongs to the layer of its top-level package
# (``superalign.critic._base`` -> "critic"), a top-level module to the layer listing it;
# the root ``superalign/__init__`` is foundation. Command-line modules form the "cli"
# layer whatever package they live in (see ``is_cli``).
FOUNDATION = "foundation"
CLI = "cli"
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        FOUNDATION,
        frozenset(
            {"errors", "types", "textsafe", "timing", "settings", "registry", "outcomes", "malloc"}
        ),
    ),
    ("models", frozenset({"models"})),
    ("critic", frozenset({"critic"})),
    ("learn", frozenset({"learn"})),
    ("attack", frozenset({"attack"})),
    ("eval", frozenset({"eval"})),
    ("config", frozenset({"config"})),
    ("loop", frozenset({"loop"})),
    ("oversight", frozenset({"oversight"})),
    ("serve", frozenset({"serve"})),
    (CLI, frozenset({"cli"})),
)
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}


@dataclass(frozen=True)
class Edge:
    """One import of superalign code: ``importer`` imports ``target`` (a module, or a
    package whose ``name`` it takes; ``name`` is None for ``import target``)."""

    importer: str
    target: str
    name: str | None
    line: int
    module_level: bool


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def is_cli(module: str) -> bool:
    """``superalign.cli`` and every module named ``_cli`` or ending in ``_cli``."""
    return module == f"{PACKAGE}.cli" or module.rpartition(".")[2].endswith("_cli")


def package_of(module: str) -> str:
    """The top-level package or module under superalign ("" for the root package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(module: str) -> str:
    if is_cli(module):
        return CLI
    top = package_of(module)
    if not top:
        return FOUNDATION
    for name, members in LAYERS:
        if top in members:
            return name
    raise AssertionError(f"{module} is in no layer: add {top!r} to LAYERS in {__file__}")


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported: not in functions, not under TYPE_CHECKING."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node):
                stack.extend(node.body)
            stack.extend(node.orelse)
        elif isinstance(node, ast.Try):
            stack.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                stack.extend(handler.body)
        elif isinstance(node, ast.With):
            stack.extend(node.body)
    return found


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def module_edges(name: str, source: str, modules: dict[str, Path] | set[str]) -> list[Edge]:
    """Every import of superalign code in ``source`` (module ``name``), wherever it is.

    ``from pkg import sub`` where ``pkg.sub`` is a module yields an edge to ``pkg.sub``
    (name None) besides the edge to ``pkg``.
    """
    tree = ast.parse(source)
    top = {id(node) for node in _top_level_imports(tree)}
    is_package = name == PACKAGE or (
        isinstance(modules, dict) and modules.get(name, Path()).name == "__init__.py"
    )
    package = name if is_package else name.rpartition(".")[0]
    edges: list[Edge] = []
    for node in ast.walk(tree):
        level = id(node) in top
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    edges.append(Edge(name, alias.name, None, node.lineno, level))
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            parts = package.split(".")
            base = parts[: len(parts) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        elif node.module and node.module.split(".")[0] == PACKAGE:
            target = node.module
        else:
            continue
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            if sub in modules:
                edges.append(Edge(name, sub, None, node.lineno, level))
            else:
                edges.append(Edge(name, target, alias.name, node.lineno, level))
    return edges


def all_edges() -> list[Edge]:
    modules = _modules()
    return [
        edge
        for name, path in sorted(modules.items())
        for edge in module_edges(name, path.read_text(encoding="utf-8"), modules)
    ]


def import_graph() -> dict[str, set[str]]:
    """Module-level imports only (what runs at import time); importing a submodule also
    runs its parent packages' ``__init__``, so those count as edges too."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for edge in all_edges():
        if not edge.module_level:
            continue
        own = set(_ancestors(edge.importer)) | {edge.importer}
        # importing a.b.c first runs a and a.b; the importer's own packages are already running
        for module in [*_ancestors(edge.target), edge.target]:
            if module in modules and module not in own:
                graph[edge.importer].add(module)
    return graph


def layer_violation(edge: Edge) -> str | None:
    """Why ``edge`` breaks the layer order, or None."""
    src, dst = edge.importer, edge.target
    if dst == PACKAGE:  # the root package (its __version__) is foundation, below all
        return None
    src_layer, dst_layer = layer_of(src), layer_of(dst)
    if src_layer == CLI:
        return None
    if dst_layer == CLI:
        return (
            f"{src} (layer {src_layer}) imports the command-line module {dst} (layer {CLI}): "
            "only cli.py and other CLI modules may import CLI modules"
        )
    if package_of(src) == package_of(dst):
        return None
    if RANK[dst_layer] < RANK[src_layer] or src_layer == dst_layer == FOUNDATION:
        return None
    return (
        f"{src} (layer {src_layer}) imports {dst} (layer {dst_layer}): a module may import "
        "only from its own package and lower layers"
    )


def private_violation(edge: Edge) -> str | None:
    """Why ``edge`` imports another package's private code, or None."""
    src, dst = edge.importer, edge.target
    if dst == PACKAGE or package_of(src) == package_of(dst):
        return None
    if is_cli(src) and is_cli(dst):  # CLI modules are private by name, and CLI-only
        return None
    layers = f"(layers {layer_of(src)} -> {layer_of(dst)})"
    if any(part.startswith("_") for part in dst.split(".")[2:]):
        what = f"{edge.name} from" if edge.name else "module"
        return f"{src} imports {what} the private module {dst} of another package {layers}"
    if edge.name is not None and edge.name.startswith("_"):
        return f"{src} imports the private name {edge.name} of {dst}, another package {layers}"
    return None


def violations(edges: list[Edge]) -> list[str]:
    found = []
    for edge in edges:
        for why in (layer_violation(edge), private_violation(edge)):
            if why:
                found.append(f"{edge.importer} line {edge.line}: {why}")
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


# -- the scanner itself ------------------------------------------------------------------


def test_every_module_has_a_layer() -> None:
    layers = {name: layer_of(name) for name in _modules()}
    assert layers["superalign"] == FOUNDATION
    assert layers["superalign.errors"] == FOUNDATION
    assert layers["superalign.critic._base"] == "critic"
    assert layers["superalign.loop._store"] == "loop"
    assert layers["superalign.eval._data_cli"] == CLI
    assert layers["superalign.eval._cli"] == CLI
    assert layers["superalign.cli"] == CLI


def test_edges_count_imports_in_functions_and_type_checking() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from ..errors import StoreError\n"
        "if TYPE_CHECKING:\n"
        "    from ..loop import Store\n"
        "def f():\n"
        "    from superalign.attack._families import FAMILIES\n"
        "    import superalign.serve\n"
    )
    edges = module_edges("superalign.critic._x", source, {"superalign.serve"})
    got = {(e.target, e.name, e.module_level) for e in edges}
    assert got == {
        ("superalign.errors", "StoreError", True),
        ("superalign.loop", "Store", False),
        ("superalign.attack._families", "FAMILIES", False),
        ("superalign.serve", None, False),
    }
    found = violations(edges)
    assert any("superalign.critic._x (layer critic) imports superalign.loop" in v for v in found)
    assert any("private module superalign.attack._families" in v for v in found)
    assert any("imports superalign.serve (layer serve)" in v for v in found)
    assert not any("errors" in v for v in found)


def test_rules_on_examples() -> None:
    def why(src: str, dst: str, name: str | None = None) -> list[str]:
        return violations([Edge(src, dst, name, 1, True)])

    assert why("superalign.config", "superalign.loop", "GoldSettings")  # config is below loop
    assert why("superalign.critic._train", "superalign.loop", "Store")
    assert not why("superalign.loop._run", "superalign.config", "LoopSection")
    assert not why("superalign.types", "superalign.errors", "StoreError")  # same foundation
    assert not why("superalign.critic._cli", "superalign.loop", "Store")  # CLI: anything
    assert why("superalign.critic", "superalign.critic._cli", "register")  # only CLI -> CLI
    assert not why("superalign.eval._cli", "superalign.eval._data_cli", "register")
    assert why("superalign.oversight._w2s", "superalign.critic._learned", "_WORD")
    assert why("superalign.oversight._w2s", "superalign.critic", "_bucket")
    assert why("superalign.eval._cli", "superalign.models._load", "load_model")  # CLI too
    assert not why("superalign.critic._x", "superalign.critic._base", "_private")  # own package
    assert why("superalign.attack._trained", "superalign.learn._trl", None)
    assert why("superalign.attack._llm", "superalign.learn._trl", None)


def test_graph_sees_the_modules_and_their_imports() -> None:
    graph = import_graph()
    assert "superalign.config" in graph
    assert "superalign.config" in graph["superalign.loop"]
    assert "superalign.loop._store" in graph["superalign.loop"]
    assert "superalign.models._fast" in graph


def test_find_cycle_reports_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# -- the package -------------------------------------------------------------------------


def test_one_layer_order_and_no_private_import_across_packages() -> None:
    found = violations(all_edges())
    assert not found, "imports against the layer order:\n" + "\n".join(found)


def test_no_import_cycle_among_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    "module",
    ["superalign.config", "superalign.loop", "superalign.models._fast", "superalign.models._vllm"],
)
def test_module_imports_fresh(module: str) -> None:
    """Each module imports on its own in a fresh interpreter (no order-dependent cycle)."""
    importlib.util.find_spec(module)
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
