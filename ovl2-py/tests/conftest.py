"""Shared fixtures for the ovl2 Python tests."""

from __future__ import annotations

import os
import pathlib
import re
from typing import Iterator

import pytest

import ovl2

# pytester runs pytest inside a test: it checks the plugin's fixtures fail what they should.
pytest_plugins = ["pytester"]


def pytest_configure(config: pytest.Config) -> None:
    """The plugin's mount fixtures fail instead of skipping where this suite's own tests do."""
    if mounts_required():
        config.option.ovl2_require_mount = True


def mounts_required() -> bool:
    """Tests needing root and overlayfs must fail, not skip, in CI (see DEVELOPERS.md)."""
    return os.environ.get("CI") == "true" or os.environ.get("OVL2_REQUIRE_MOUNT") == "1"


def need_root(why: str) -> None:
    """Skips a root-only test outside CI; fails it in CI so it can never silently vanish."""
    if os.geteuid() != 0:
        if mounts_required():
            pytest.fail(f"needs root ({why}) and CI=true/OVL2_REQUIRE_MOUNT=1 forbids skipping")
        pytest.skip(f"needs root ({why})")


def id_mapped(n: int) -> bool:
    """Whether uid and gid ``n`` exist in this user namespace (not so in ``unshare -Ur``)."""
    for table in ("/proc/self/uid_map", "/proc/self/gid_map"):
        with open(table) as f:
            if not any(int(i) <= n < int(i) + int(c) for i, _, c in (line.split() for line in f)):
                return False
    return True


def overlay_available() -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == "overlay" for line in f if line.strip())
    except OSError:
        return False


def need_mounts() -> None:
    """Skips a test that mounts overlays outside CI; fails it under CI=true."""
    need_root("mounting overlayfs")
    if not overlay_available():
        if mounts_required():
            pytest.fail("overlayfs is not available and CI=true/OVL2_REQUIRE_MOUNT=1 forbids skipping")
        pytest.skip("overlayfs is not available")


def mount_points() -> list[str]:
    """Mount points of this mount namespace, from /proc/self/mountinfo (octal escapes decoded)."""
    # Bytes, decoded as os.fsdecode does: a mount at a non-UTF-8 path must not break the read.
    out = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            raw = line.split()[4]
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), raw)
            out.append(os.fsdecode(point))
    return out


def mounts_under(path: os.PathLike[str] | str) -> list[str]:
    prefix = os.fspath(path).rstrip("/") + "/"
    return [m for m in mount_points() if m.startswith(prefix)]


@pytest.fixture
def mount_driver(ovl2_store: ovl2.Driver, home: pathlib.Path) -> ovl2.Driver:
    """An open store on a machine that can mount: the pytest plugin's ``ovl2_store``, which
    fails the test if it leaves anything mounted. ``home`` is its home."""
    need_mounts()
    assert ovl2_store.home == home, "ovl2_store lives in tmp_path / 'store', as home"
    return ovl2_store


@pytest.fixture
def home(tmp_path: pathlib.Path) -> pathlib.Path:
    """A path for a new store (not yet created)."""
    return tmp_path / "store"


@pytest.fixture
def driver(home: pathlib.Path) -> Iterator[ovl2.Driver]:
    """An open store, closed after the test."""
    with ovl2.Driver(home) as d:
        yield d


# Rust debug formatting that must never reach a user: Option and Result wrappers, and
# quotes escaped by a Debug of an already quoted string.
RUST_DEBUG_TEXT = re.compile(r'\bSome\(|\bNone\b|\bOk\(|\bErr\(|\\"')


def rust_debug_text(message: str) -> list[str]:
    """The Rust debug artefacts in ``message`` (none, in a good message)."""
    return RUST_DEBUG_TEXT.findall(message)


@pytest.fixture(autouse=True)
def no_rust_debug_text_in_errors() -> Iterator[list[str]]:
    """Records the message of every ``ovl2.Error`` a test makes (raised or not) and fails the
    test if one carries Rust debug text: the whole suite is the corpus of error messages."""
    seen: list[str] = []
    original = ovl2.Error.__init__

    def record(self: ovl2.Error, *args: object) -> None:
        original(self, *args)
        seen.append(str(self))

    ovl2.Error.__init__ = record  # type: ignore[method-assign, assignment]
    try:
        yield seen
    finally:
        ovl2.Error.__init__ = original  # type: ignore[method-assign]
    bad = [m for m in seen if rust_debug_text(m)]
    assert bad == [], f"error messages with Rust debug text: {bad}"
