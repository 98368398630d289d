"""A test harness the way ovl2 is meant to be used from Python: an image built from layer
tarballs once per module, a fresh container mounted per test, and nothing left mounted
afterwards.

Needs root and overlayfs; fails instead of skipping when CI=true or OVL2_REQUIRE_MOUNT=1.
"""

from __future__ import annotations

import pathlib
import re
from typing import Iterator, NamedTuple

import pytest

import ovl2
from conftest import mounts_under, need_mounts
from tarballs import layer_tar


class Image(NamedTuple):
    driver: ovl2.Driver
    home: pathlib.Path
    top: str


# The image: one layer tarball each, as a registry would serve them (the second gzipped).
LAYERS: list[tuple[str, bytes]] = [
    (
        "base",
        layer_tar(
            {
                "etc": ("dir", ""),
                "etc/os-release": "NAME=ovl2-test\n",
                "bin": ("dir", ""),
                "bin/tool": "#!/bin/sh\necho v1\n",
                "var": ("dir", ""),
                "var/lib": ("dir", ""),
                "var/lib/app": ("dir", ""),
                "var/lib/app/data": "v1",
            }
        ),
    ),
    (
        "update",
        layer_tar(
            {"var/lib/app/data": "v2", "etc/motd": "welcome\n", "bin/tool": ("whiteout", "")},
            gz=True,
        ),
    ),
    ("config", layer_tar({"etc/app.conf": "debug = false\n"})),
]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    need_mounts()
    home = tmp_path_factory.mktemp("harness") / "store"
    with ovl2.Driver(home, sync=False) as d:
        parent = None
        for id, tar in LAYERS:
            d.create(id, parent)
            d.apply_diff(id, tar, parent)
            parent = id
        assert parent is not None
        yield Image(d, home, parent)
        # The whole module leaves the image as it found it: no containers, no mounts.
        assert mounts_under(home) == []
        assert d.mounts() == []
        assert [l.id for l in d.layers()] == sorted(id for id, _ in LAYERS)
        assert d.check() == []


@pytest.fixture
def container(image: Image, request: pytest.FixtureRequest) -> Iterator[pathlib.Path]:
    """A new container on the image, as Docker makes one (with its init layer), mounted for
    the test and removed afterwards."""
    id = "ctr-" + re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    d = image.driver
    d.create_container(id, image.top)
    try:
        with d.mounted(id) as root:
            yield root
    finally:
        d.remove_container(id)
    assert mounts_under(image.home) == []


def test_docker_init_entries_are_in_place(container: pathlib.Path) -> None:
    assert (container / ".dockerenv").is_file()
    assert (container / "etc" / "hostname").read_text() == ""
    assert (container / "proc").is_dir()


def test_image_files_are_visible(container: pathlib.Path) -> None:
    assert (container / "etc" / "os-release").read_text() == "NAME=ovl2-test\n"
    assert (container / "etc" / "app.conf").read_text() == "debug = false\n"
    assert (container / "etc" / "motd").read_text() == "welcome\n"


def test_upper_layers_win(container: pathlib.Path) -> None:
    assert (container / "var" / "lib" / "app" / "data").read_text() == "v2"


def test_deleted_files_are_gone(container: pathlib.Path) -> None:
    assert not (container / "bin" / "tool").exists()
    assert sorted(p.name for p in (container / "bin").iterdir()) == []


def test_container_changes_are_what_the_test_did(container: pathlib.Path, image: Image) -> None:
    (container / "etc" / "hostname").write_text("box\n")
    (container / "etc" / "motd").unlink()
    (container / "etc" / "new.conf").write_text("x\n")
    id = container.parent.name
    # As `docker diff`: against the init layer, so the init entries do not show.
    kinds = {c.path: c.kind for c in image.driver.changes(id, id + "-init")}
    assert kinds == {
        "/etc": ovl2.ChangeKind.MODIFY,
        "/etc/hostname": ovl2.ChangeKind.MODIFY,
        "/etc/motd": ovl2.ChangeKind.DELETE,
        "/etc/new.conf": ovl2.ChangeKind.ADD,
    }


def test_container_writes_stay_in_the_container(container: pathlib.Path, image: Image) -> None:
    (container / "etc" / "hostname").write_text("box\n")
    (container / "var" / "lib" / "app" / "data").write_text("v3")
    assert (container / "var" / "lib" / "app" / "data").read_text() == "v3"
    # The image layers are untouched.
    assert (image.home / "update" / "diff" / "var" / "lib" / "app" / "data").read_text() == "v2"
    assert not (image.home / "config" / "diff" / "etc" / "hostname").exists()


def test_each_test_gets_a_fresh_container(container: pathlib.Path) -> None:
    # The previous test wrote these into its own container, which is gone.
    assert (container / "etc" / "hostname").read_text() == ""
    assert (container / "var" / "lib" / "app" / "data").read_text() == "v2"


def test_two_containers_side_by_side(container: pathlib.Path, image: Image) -> None:
    d = image.driver
    d.create_container("sidecar", image.top)
    try:
        with d.mounted("sidecar") as other:
            (other / "only-in-sidecar").write_text("x")
            assert not (container / "only-in-sidecar").exists()
            assert len(mounts_under(image.home)) == 2
    finally:
        d.remove_container("sidecar")


def test_a_failing_body_still_unmounts(image: Image) -> None:
    d = image.driver
    d.create_rw("crashy", image.top)
    try:
        with pytest.raises(RuntimeError, match="harness failure"):
            with d.mounted("crashy") as root:
                (root / "partial").write_text("half")
                raise RuntimeError("harness failure")
        assert mounts_under(image.home) == []
    finally:
        d.remove("crashy")
