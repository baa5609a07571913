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
    ("distillkit.cli",),
    ("distillkit.trainer", "distillkit.continual"),
    ("distillkit.assembly",),
    ("distillkit.config",),
    ("distillkit.metrics",),
    ("distillkit.methods",),
    ("distillkit.addons",),
    ("distillkit.pool", "distillkit.experts"),
    ("distillkit.evaluation", "distillkit.shards"),
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


def imports(module: str) -> set[str]:
    """The distillkit modules `module` imports (a `from pkg import name` that names a
    submodule counts as that submodule)."""
    tree = ast.parse(MODULES[module].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("distillkit"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("distillkit"):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES and m != module}


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer(module)


def test_no_import_runs_up_the_layers():
    upward = [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in GRAPH.items()
        for b in targets
        if layer(b) < layer(a)
    ]
    assert upward == []


def test_no_module_imports_itself_back():
    """Depth-first search for a cycle among modules (package faces included)."""
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_checker_sees_an_upward_import():
    """The graph is real: the trainer imports the assembly, the assembly not the trainer."""
    assert "distillkit.assembly" in GRAPH["distillkit.trainer"]
    assert layer("distillkit.trainer") < layer("distillkit.assembly")
    assert "distillkit.trainer" not in GRAPH["distillkit.assembly"]
