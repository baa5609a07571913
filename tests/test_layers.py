"""The house's layers: every import in distillkit/ (function-level ones too) runs downward, and
no module imports itself back through others. A new module must be placed in a layer here."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "distillkit"

#: Top to bottom. A module belongs to the layer of its longest matching prefix; it may import
#: its own layer and the layers below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("distillkit.tables",),
    ("distillkit.__main__",),
    ("distillkit.cli",),
    ("distillkit.trainer", "distillkit.continual"),
    ("distillkit.assembly",),
    ("distillkit.config",),
    ("distillkit.metrics",),
    ("distillkit.methods",),
    ("distillkit.addons",),
    ("distillkit.pool", "distillkit.experts"),
    ("distillkit.evaluation", "distillkit.shards", "distillkit.workbench"),
    (
        "distillkit.checkpoint",
        "distillkit.synthetic",
        "distillkit.logging",
        "distillkit.networks",
        "distillkit.runtime",
        "distillkit.report",
        "distillkit.data",
        "distillkit.settings",
        "distillkit.visualize",
    ),
    (
        "distillkit.models",
        "distillkit.augment",
        "distillkit.io",
        "distillkit.seeding",
        "distillkit.allocator",
        "distillkit.progress",
        "distillkit.classwise",
        "distillkit.memory",
        "distillkit.errors",
        "distillkit",
    ),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    matches = [
        (len(prefix), index)
        for index, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, f"{module} is in no layer of tests/test_layers.py"
    return max(matches)[1]


def imports_in(source: str, module: str) -> set[str]:
    """The distillkit modules `source` (the text of `module`) imports, at any depth of the file
    (a `from pkg import name` that names a submodule counts as that submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("distillkit"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("distillkit"):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES and m != module}


def imports(module: str) -> set[str]:
    return imports_in(MODULES[module].read_text(), module)


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import of `graph` that runs up the layers."""
    return [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in graph.items()
        for b in sorted(targets)
        if layer(b) < layer(a)
    ]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Depth-first search for cycles among modules (package faces included)."""
    state: dict[str, int] = {}
    found: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer(module)


def test_no_import_runs_up_the_layers():
    assert upward(GRAPH) == []


def test_no_module_imports_itself_back():
    assert cycles(GRAPH) == []


#: A function-level import of the trainer (layer 2) in the assembly (layer 3): the kind of upward
#: import the checks above must see.
UPWARD_SOURCE = """
from distillkit.config import as_dict


def build(cfg):
    from distillkit.trainer import Trainer

    return Trainer(as_dict(cfg), ".")
"""


def test_the_checker_sees_an_upward_import():
    """The checks are real: an upward import hidden in a function is found and reported, and
    the cycle it closes (the trainer imports the assembly) is found too."""
    found = imports_in(UPWARD_SOURCE, "distillkit.assembly")
    assert found == {"distillkit.config", "distillkit.trainer"}
    assert layer("distillkit.trainer") < layer("distillkit.assembly")
    assert "distillkit.assembly" in GRAPH["distillkit.trainer"]  # the real, downward import
    broken = {**GRAPH, "distillkit.assembly": GRAPH["distillkit.assembly"] | found}
    assert upward(broken) == [
        f"distillkit.assembly (layer {layer('distillkit.assembly')}) imports distillkit.trainer "
        f"(layer {layer('distillkit.trainer')})"
    ]
    assert any(set(c) == {"distillkit.assembly", "distillkit.trainer"} for c in cycles(broken))
