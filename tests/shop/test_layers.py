"""The shop's packages stay cheap to import, and its test support's lazy names resolve.

The layer rules themselves (production shop code imports neither the kit nor its test
support; subjects import neither kit nor shop) are checked for the whole package in
tests/test_architecture.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import labkit.shop.testing


@pytest.mark.parametrize(
    ("package", "must_not_load"),
    [
        ("labkit.shop", "fastapi"),
        ("labkit.shop.data", "fastapi"),
        ("labkit.shop.testing.fixtures", "fastapi"),
        ("labkit.subjects", "boto3"),
    ],
)
def test_lightweight_packages_stay_light(package: str, must_not_load: str) -> None:
    code = f"import sys, {package}; print({must_not_load!r} in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False", f"importing {package} loads {must_not_load}"


@pytest.mark.parametrize("name", labkit.shop.testing.__all__)
def test_every_name_shop_testing_lists_can_be_imported(name: str) -> None:
    """labkit.shop.testing imports its names on first use: a listed name must resolve."""
    assert getattr(labkit.shop.testing, name) is not None
