"""The package reads top to bottom as a job's data flows: api -> service -> queues -> running ->
process / store -> sandbox, over shared domain modules. An import may go down or stay in its
layer, never up, and no two modules import each other, directly or round a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import interpreter

PACKAGE = Path(interpreter.__file__).parent

# Highest first. A module belongs to the first entry that is a prefix of its dotted name.
LAYERS: list[tuple[str, ...]] = [
    ("interpreter.cli",),  # the console script: starts the server, or calls it as a client
    ("interpreter.server", "interpreter.worker"),
    ("interpreter.api",),
    ("interpreter.service", "interpreter.wiring"),
    ("interpreter.queues", "interpreter.sessions"),
    ("interpreter.running",),
    ("interpreter.process", "interpreter.store"),
    ("interpreter.sandbox",),
    ("interpreter",),  # config, errors, job, limits, languages, workspace, tree, ...
]


def layer_of(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules ``path`` imports, at run time or for type checking alike."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name in known and name != "interpreter"}


def graph() -> dict[str, set[str]]:
    known = modules()
    edges = {name: imports(path, known) for name, path in known.items()}
    # a package's __init__ re-exporting its own modules is its face, not a dependency
    return {
        name: {target for target in targets if not target.startswith(name + ".")}
        for name, targets in edges.items()
    }


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})"
        for source, targets in graph().items()
        for target in targets
        if layer_of(target) < layer_of(source)
    ]
    assert upward == []


def test_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_every_module_is_in_a_layer_and_the_layers_are_folders() -> None:
    for name in modules():
        layer_of(name)
    for prefixes in LAYERS[:-1]:
        for prefix in prefixes:
            relative = Path(*prefix.split(".")[1:])
            assert (PACKAGE / relative).is_dir() or (PACKAGE / f"{relative}.py").is_file(), prefix
