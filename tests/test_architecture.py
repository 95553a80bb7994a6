"""The package's shape, checked: layers import one way, and only public faces are used.

labkit is three products in one namespace, kept apart by these rules:

    lessons, tests, benchmarks      import public names only (no `_module`, no `_name`)
    shop/testing/  ──►  kit, shop   the one place that joins the demo shop to the kit
    bench          ──►  kit         load/, plots, isolation, load_demo: never the plugin
    kit            ──►  kit         services/, plugin, plugin_aws, notebook, exercises, lessons, sql,
                                    waiting, classroom/reporting (the stdlib client checks call)
    classroom      ──►  kit         learners as tenants, their progress: never the plugin
    cli            ──►  kit, classroom   the command line over both
    shop, subjects ──►  themselves  standalone applications: they know nothing of the kit

The rules read every import in the source (module level, in functions, under
TYPE_CHECKING): a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "labkit"

# Layer of a module: the first prefix that matches (most specific first).
LAYERS: tuple[tuple[str, str], ...] = (
    ("labkit.shop.testing", "shop-testing"),
    # `python -m labkit.shop` is the demo's launcher: live services and fakes around the shop
    ("labkit.shop.__main__", "shop-testing"),
    ("labkit.shop", "shop"),
    ("labkit.subjects", "subjects"),
    ("labkit.load_demo", "bench"),
    ("labkit.load", "bench"),
    ("labkit.plots", "bench"),
    ("labkit.isolation", "bench"),
    ("labkit.classroom.reporting", "kit"),
    ("labkit.classroom", "classroom"),
    ("labkit.cli", "cli"),
    ("labkit", "kit"),
)
# What each layer may import from labkit.
ALLOWED: dict[str, set[str]] = {
    "kit": {"kit"},
    "bench": {"kit", "bench"},
    "subjects": {"subjects"},
    "shop": {"shop"},
    "shop-testing": {"kit", "shop", "shop-testing"},
    "classroom": {"kit", "classroom"},
    "cli": {"kit", "classroom"},
}
# The bench measures the kit's services; it never runs as, or through, a pytest plugin.
# A classroom provisions tenants and records progress; it runs no tests itself.
FORBIDDEN_MODULES: dict[str, set[str]] = {"bench": {"labkit.plugin", "labkit.plugin_aws"},
                                          "classroom": {"labkit.plugin", "labkit.plugin_aws"}}


def layer_of(module: str) -> str:
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    raise AssertionError(f"{module} is in no layer")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


MODULES = package_modules()


def imports_in(
    tree: ast.AST, module: str, is_package: bool
) -> Iterator[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every labkit import in `tree`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("labkit"):
                    yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("labkit"):
                continue
            names = [alias.name for alias in node.names]
            submodules = [n for n in names if f"{base}.{n}" in MODULES]
            for name in submodules:
                yield f"{base}.{name}", [], node.lineno
            others = [n for n in names if n not in submodules]
            if others or not submodules:
                yield base, others, node.lineno


def package_imports() -> Iterator[tuple[str, str, list[str], int]]:
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        for target, names, line in imports_in(tree, module, path.name == "__init__.py"):
            yield module, target, names, line


def is_private_module(module: str) -> bool:
    return any(part.startswith("_") for part in module.split(".")[1:])


def owner_package(module: str) -> str:
    """The package a private module belongs to: everything before its first `_` part."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if i and part.startswith("_"):
            return ".".join(parts[:i])
    return module


def test_layers_import_one_way() -> None:
    wrong = []
    for module, target, _names, line in package_imports():
        source, dest = layer_of(module), layer_of(target)
        if dest not in ALLOWED[source] or target in FORBIDDEN_MODULES.get(source, ()):
            wrong.append(
                f"{MODULES[module].relative_to(ROOT)}:{line}: {source} imports {target} ({dest})"
            )
    assert not wrong, "imports against the layer rules:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, target, _names, _line in package_imports():
        if target in graph and target != module:
            graph[module].add(target)
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(sorted(c)) for c in cycles)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively (the graph is small, but recursion limits are not)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root, edges in graph.items():
        if root in index:
            continue
        work = [(root, iter(sorted(edges)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def test_packages_use_each_others_public_faces() -> None:
    wrong = []
    for module, target, names, line in package_imports():
        where = f"{MODULES[module].relative_to(ROOT)}:{line}"
        if is_private_module(target) and not module.startswith(owner_package(target)):
            wrong.append(f"{where}: imports the private module {target}")
        inside = (
            module == target
            or module.startswith(target + ".")
            or target.startswith(owner_package(module) + ".")
        )
        private_names = [n for n in names if n.startswith("_")]
        if private_names and not inside:
            wrong.append(f"{where}: imports private {', '.join(private_names)} from {target}")
    assert not wrong, "\n".join(wrong)


# -- outside the package: lessons, tests, benchmarks ------------------------------------

PRIVATE_ATTRIBUTE = re.compile(r"\blabkit(?:\.\w+)*\._(?!_)\w+")  # dunders are public


def outside_sources() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(file, [(where, code)]) for each notebook (a code cell each) and test or benchmark."""
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        yield (
            notebook.name,
            [
                (f"cell {number}", cell_code("".join(cell["source"])))
                for number, cell in enumerate(cells)
                if cell["cell_type"] == "code"
            ],
        )
    for folder in ("tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path != Path(__file__).resolve():
                yield str(path.relative_to(ROOT)), [("", path.read_text())]


def cell_code(source: str) -> str:
    """A cell's Python: magics and shell lines blanked, so that line numbers still match."""
    return "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )


def private_uses(code: str) -> list[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []  # not plain Python (an exercise stub); nbmake runs it anyway
    wrong = []
    for target, names, line in imports_in(tree, "__outside__", False):
        if target not in MODULES:
            wrong.append(f"line {line}: {target} is not a labkit module")
        elif is_private_module(target):
            wrong.append(f"line {line}: {target} is private")
        wrong += [f"line {line}: {n} is private to {target}" for n in names if n.startswith("_")]
    return wrong + [f"uses {m.group(0)}" for m in PRIVATE_ATTRIBUTE.finditer(code)]


SOURCES = dict(outside_sources())


@pytest.mark.parametrize("source", SOURCES)
def test_lessons_tests_and_benchmarks_import_public_names_only(source: str) -> None:
    wrong = [
        f"{where} {problem}".strip()
        for where, code in SOURCES[source]
        for problem in private_uses(code)
    ]
    assert not wrong, f"{source}: " + "; ".join(wrong)


def test_the_rules_catch_what_they_forbid() -> None:
    """The checks above can fail: a private import and an upward import are both seen."""
    tree = ast.parse("from labkit.services._local import start\nfrom labkit.shop import api\n")
    found = list(imports_in(tree, "labkit.plugin", False))
    assert ("labkit.services._local", ["start"], 1) in found
    assert is_private_module("labkit.services._local")
    assert layer_of("labkit.plugin") == "kit" and "shop" not in ALLOWED["kit"]
    assert layer_of("labkit.shop.testing.live") == "shop-testing"
    assert private_uses("import labkit.services\nlabkit.services._local.find()")
    assert private_uses("from labkit.services import _local")
    assert not private_uses("import labkit\nprint(labkit.__file__)")
    cyclic = {"a": {"b"}, "b": {"a"}, "c": set()}
    assert sorted(map(sorted, strongly_connected(cyclic))) == [["a", "b"], ["c"]]
