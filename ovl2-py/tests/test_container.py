"""Containers as Docker makes them: create_container / remove_container and the init layer."""

from __future__ import annotations

import os
import pathlib
import stat
from typing import Any

import pytest

import ovl2
from conftest import mounts_under


def test_docker_init_entries() -> None:
    entries = ovl2.docker_init_entries()
    assert ("dir", "/proc") in entries
    assert ("file", "/etc/hosts") in entries
    assert ("file", "/.dockerenv") in entries
    assert ("symlink", "/etc/mtab", "/proc/mounts") in entries


def test_create_and_remove_a_container(mount_driver: ovl2.Driver, home: pathlib.Path) -> None:
    d = mount_driver
    d.create("image")
    (home / "image" / "diff" / "etc").mkdir()
    (home / "image" / "diff" / "etc" / "hosts").write_text("from the image\n")
    d.create_container("c1", "image")

    assert d.parent("c1-init") == "image"
    assert d.parent("c1") == "c1-init"
    init = home / "c1-init" / "diff"
    assert (init / ".dockerenv").is_file() and (init / ".dockerenv").stat().st_size == 0
    assert (init / "proc").is_dir()
    assert os.readlink(init / "etc" / "mtab") == "/proc/mounts"
    # The init entry replaces the image's file, as Docker's does.
    assert (init / "etc" / "hosts").read_text() == ""
    assert mounts_under(home) == [], "the init layer's fill mount is gone"

    with d.mounted("c1") as root:
        assert (root / "etc" / "hostname").exists()
        assert (root / "etc" / "hosts").read_text() == ""
        with pytest.raises(ovl2.BusyError):
            d.remove_container("c1")
    d.remove_container("c1")
    assert not d.exists("c1") and not d.exists("c1-init")
    assert [l.id for l in d.layers()] == ["image"]


def test_remove_container_force_unmounts(mount_driver: ovl2.Driver, home: pathlib.Path) -> None:
    d = mount_driver
    d.create("image")
    d.create_container("c1", "image")
    d.get("c1")
    d.remove_container("c1", force=True)
    assert mounts_under(home) == []
    assert not d.exists("c1")


def test_custom_init_entries_and_owner(mount_driver: ovl2.Driver, home: pathlib.Path) -> None:
    d = mount_driver
    d.create("image")
    entries: list[Any] = [("dir", "/run/secrets"), ("file", "/etc/app.conf"), ("symlink", "/current", "/run")]
    d.create_container("c1", "image", init_entries=entries, root=(0, 0))
    init = home / "c1-init" / "diff"
    assert sorted(p.name for p in init.iterdir()) == ["current", "etc", "run"]
    assert stat.S_ISDIR((init / "run" / "secrets").stat().st_mode)
    assert os.readlink(init / "current") == "/run"
    d.remove_container("c1")


def test_container_errors(mount_driver: ovl2.Driver) -> None:
    d = mount_driver
    with pytest.raises(ovl2.LayerNotFoundError):
        d.create_container("c1", "no-image")
    d.create("image")
    d.create("c1")
    with pytest.raises(ovl2.LayerExistsError):
        d.create_container("c1", "image")
    assert not d.exists("c1-init"), "all or nothing"
    untyped: Any = d
    with pytest.raises(ValueError, match="init entry"):
        untyped.create_container("c2", "image", init_entries=[("fifo", "/x")])
    with pytest.raises(ovl2.InvalidArgumentError):
        d.create_container("c2", "image", init_entries=[("dir", "relative/path")])
    with pytest.raises(ovl2.LayerNotFoundError):
        d.remove_container("never-made")
    assert sorted(l.id for l in d.layers()) == ["c1", "image"]
