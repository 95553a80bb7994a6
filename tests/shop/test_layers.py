"""The shop is a standalone app: only labkit.shop.testing joins it to labkit's kit.

Read from the source (ast), so an import inside a function counts as much as one at the
top: production code (app, data, domain, infra, workers, settings) imports neither the
kit nor the shop's test support, and the lesson subjects import neither kit nor shop.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import labkit

LABKIT = Path(labkit.__file__).parent
KIT = ("labkit.services", "labkit.plugin", "labkit.waiting", "labkit.notebook", "labkit.exercises")
BENCH = ("labkit.load", "labkit.plots", "labkit.isolation")


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, with ``from labkit import x`` counted as labkit.x."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def offending(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{path.relative_to(LABKIT.parent)} imports {module}"
        for path in paths
        for module in imported_modules(path)
        if any(module == f or module.startswith(f"{f}.") for f in forbidden)
    )


def production_modules() -> list[Path]:
    shop = LABKIT / "shop"
    return [
        path
        for path in shop.rglob("*.py")
        if "testing" not in path.relative_to(shop).parts and path.name != "__main__.py"
    ]


def test_shop_production_code_imports_neither_the_kit_nor_its_test_support() -> None:
    assert production_modules(), "no shop modules found: has the package moved?"
    assert offending(production_modules(), (*KIT, *BENCH, "labkit.shop.testing")) == []


def test_lesson_subjects_import_neither_the_kit_nor_the_shop() -> None:
    subjects = list((LABKIT / "subjects").rglob("*.py"))
    assert subjects, "no subject modules found: has the package moved?"
    assert offending(subjects, (*KIT, *BENCH, "labkit.shop")) == []


@pytest.mark.parametrize(
    ("package", "must_not_load"),
    [("labkit.shop", "fastapi"), ("labkit.shop.data", "fastapi"), ("labkit.subjects", "boto3")],
)
def test_lightweight_packages_stay_light(package: str, must_not_load: str) -> None:
    code = f"import sys, {package}; print({must_not_load!r} in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False", f"importing {package} loads {must_not_load}"
