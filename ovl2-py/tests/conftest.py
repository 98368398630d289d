"""Shared fixtures for the ovl2 Python tests."""

from __future__ import annotations

import os
import pathlib
from typing import Iterator

import pytest

import ovl2


def mounts_required() -> bool:
    """Tests needing root and overlayfs must fail, not skip, in CI (see DEVELOPERS.md)."""
    return os.environ.get("CI") == "true" or os.environ.get("OVL2_REQUIRE_MOUNT") == "1"


def need_root(why: str) -> None:
    """Skips a root-only test outside CI; fails it in CI so it can never silently vanish."""
    if os.geteuid() != 0:
        if mounts_required():
            pytest.fail(f"needs root ({why}) and CI=true/OVL2_REQUIRE_MOUNT=1 forbids skipping")
        pytest.skip(f"needs root ({why})")


@pytest.fixture
def home(tmp_path: pathlib.Path) -> pathlib.Path:
    """A path for a new store (not yet created)."""
    return tmp_path / "store"


@pytest.fixture
def driver(home: pathlib.Path) -> Iterator[ovl2.Driver]:
    """An open store, closed after the test."""
    with ovl2.Driver(home) as d:
        yield d
