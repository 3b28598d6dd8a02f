"""The package's layers, read from the source: every import between folders points down.

Each folder (and each top-level module) of `llamaberry/` sits on one layer, the web UI on the
top one. An import counts wherever it is written (inside a function too), and so does a module
named in a string to `importlib.import_module`, so a cycle cannot hide behind a lazy import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A part may import its own layer's modules and any layer below it, never above.
LAYERS: list[set[str]] = [
    {"testing"},  # imports nothing else of ours: users run their tests on it
    {"core"},
    {"providers"},
    {"run"},
    {"modes"},
    {"store", "compare"},
    {"engine"},
    {"eval"},
    # The pytest plugin hands out the fake server and the embedded model alike.
    {"serve", "cli", "llamaberry_ui", "testing.plugin"},
    {"__init__", "__main__"},
]
LAYER_OF = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str:
    """The folder or top-level module that `module` (dotted, from the top) belongs to."""
    top, _, rest = module.partition(".")
    if module == "llamaberry.testing.plugin":
        return "testing.plugin"
    if top == "llamaberry_ui":
        return top
    return rest.split(".")[0] if rest else "__init__"


def sources() -> dict[str, Path]:
    """Every module of the package and of the web UI, by dotted name."""
    found = {}
    for top, folder in (
        ("llamaberry", ROOT / "llamaberry"),
        ("llamaberry_ui", ROOT / "ui" / "llamaberry_ui"),
    ):
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((top, *parts))] = path
    return found


def imported(module: str, path: Path) -> set[str]:
    """The modules of ours that `module` imports, by statement or by name to importlib."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from a.b import c` imports a.b, or the module a.b.c where c is one.
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
        ):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
            elif isinstance(arg, ast.JoinedStr):
                # An f-string: what a reader can tell of it is that it names one of ours.
                text = "".join(v.value for v in arg.values if isinstance(v, ast.Constant))
                names.add("llamaberry.<dynamic>" if "{" in ast.unparse(arg) else text)
    return {n for n in names if n.split(".")[0] in ("llamaberry", "llamaberry_ui")}


def by_table() -> dict[str, set[str]]:
    """The modules that a module loads by name from a table of its own, read from that table:
    the package's lazy public names, and the provider table."""
    import llamaberry
    import llamaberry.providers

    return {
        "llamaberry": {f"llamaberry.{m}" for m in vars(llamaberry)["_EXPORTS"].values()},
        "llamaberry.providers": {
            "llamaberry.providers." + where.partition(":")[0]
            for where in llamaberry.providers.CLIENTS.values()
        },
    }


def graph() -> dict[str, set[str]]:
    known = sources()
    tables = by_table()
    edges: dict[str, set[str]] = {}
    for module, path in known.items():
        targets = set()
        found = {n for n in imported(module, path) if not n.endswith("<dynamic>")}
        for name in found | tables.get(module, set()):
            # `from llamaberry.core import errors` names a module; `from x import Name` names x.
            while name not in known and "." in name:
                name = name.rpartition(".")[0]
            if name != module:
                targets.add(name)
        edges[module] = targets
    return edges


def test_every_part_of_the_package_has_a_layer():
    missing = sorted({part_of(m) for m in sources()} - set(LAYER_OF))
    assert missing == [], f"give these a layer in LAYERS: {missing}"


def test_no_import_points_up_a_layer():
    upward = [
        f"{module} -> {target}"
        for module, targets in graph().items()
        for target in targets
        if LAYER_OF[part_of(target)] > LAYER_OF[part_of(module)]
    ]
    assert upward == []


def test_no_module_is_named_to_importlib_by_a_computed_string():
    # Modules that load from a table of names are checked through that table (`by_table`).
    tables = by_table()
    dynamic = [
        m
        for m, path in sources().items()
        if m not in tables and "llamaberry.<dynamic>" in imported(m, path)
    ]
    assert dynamic == [], "name the module in a plain string, so its layer can be checked"


def test_no_import_cycle_between_modules():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_testing_imports_nothing_else_of_ours():
    outside = [
        f"{module} -> {target}"
        for module, targets in graph().items()
        if part_of(module) == "testing"
        for target in targets
        if part_of(target) != "testing"
    ]
    assert outside == []
