"""A test harness the way ovl2 is meant to be used from Python, on the pytest plugin the wheel
ships (ovl2.pytest_plugin): an image built from layer tarballs once per module with
ovl2.testing.build_image, a fresh container mounted per test by the ``ovl2_container``
fixture, and nothing left mounted afterwards.

Needs root and overlayfs; fails instead of skipping when CI=true or OVL2_REQUIRE_MOUNT=1.
"""

from __future__ import annotations

import pathlib
from typing import Iterator

import pytest

import ovl2
from conftest import mounts_under, need_mounts
from ovl2.pytest_plugin import ContainerFactory
from ovl2.testing import WHITEOUT, Container, Dir, Image, LayerSource, build_image, layer_tar


def layers(tmp: pathlib.Path) -> list[LayerSource]:
    """The image: one layer each as a dict, as gzipped tarball bytes and as a tarball file, as
    a registry would serve them."""
    config = tmp / "config.tar"
    config.write_bytes(layer_tar({"etc/app.conf": "debug = false\n"}))
    return [
        {
            "etc": Dir(),
            "etc/os-release": "NAME=ovl2-test\n",
            "bin": Dir(),
            "bin/tool": "#!/bin/sh\necho v1\n",
            "var": Dir(),
            "var/lib": Dir(),
            "var/lib/app": Dir(),
            "var/lib/app/data": "v1",
        },
        layer_tar({"var/lib/app/data": "v2", "etc/motd": "welcome\n", "bin/tool": WHITEOUT}, gzip=True),
        config,
    ]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    need_mounts()
    tmp = tmp_path_factory.mktemp("harness")
    home = tmp / "store"
    with ovl2.Driver(home, sync=False) as d:
        img = build_image(d, layers(tmp), name="layer")
        assert img.layers == ("layer-0", "layer-1", "layer-2")
        assert [l.id for l in d.layers()] == list(img.layers)
        assert img.digests[0].startswith("sha256:") and len(set(img.digests)) == 3
        yield img
        # The whole module leaves the image as it found it: no containers, no mounts.
        assert mounts_under(home) == []
        assert d.mounts() == []
        assert [l.id for l in d.layers()] == list(img.layers)
        assert d.check() == []


@pytest.fixture(autouse=True)
def nothing_left_mounted(image: Image) -> Iterator[None]:
    """Set up before (so torn down after) the plugin's fixtures: every test ends with its
    containers unmounted."""
    yield
    assert mounts_under(image.store.home) == []


@pytest.fixture
def container(image: Image, ovl2_container: ContainerFactory) -> Iterator[pathlib.Path]:
    """A new container on the image, as Docker makes one (with its init layer), mounted for
    the test and removed afterwards (by the plugin's ``ovl2_container``)."""
    ctr = ovl2_container(image)
    assert (ctr.store, ctr.image, ctr.init_id) == (image.store, image, ctr.id + "-init")
    assert image.store.parent(ctr.id) == ctr.init_id and image.store.parent(ctr.init_id) == image.top
    assert [m.id for m in image.store.mounts()] == [ctr.id]
    yield ctr.root
    # The plugin takes the container down after this fixture's teardown: it is still here.
    assert image.store.exists(ctr.id)


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


def test_container_changes_are_what_the_test_did(image: Image, ovl2_container: ContainerFactory) -> None:
    ctr: Container = ovl2_container(image)
    (ctr.root / "etc" / "hostname").write_text("box\n")
    (ctr.root / "etc" / "motd").unlink()
    (ctr.root / "etc" / "new.conf").write_text("x\n")
    # As `docker diff`: against the init layer, so the init entries do not show.
    kinds = {c.path: c.kind for c in ctr.changes()}
    assert kinds == {c.path: c.kind for c in image.store.changes(ctr.id, ctr.id + "-init")}
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
    assert (image.store.home / "layer-1" / "diff" / "var" / "lib" / "app" / "data").read_text() == "v2"
    assert not (image.store.home / "layer-2" / "diff" / "etc" / "hostname").exists()


def test_each_test_gets_a_fresh_container(container: pathlib.Path) -> None:
    # The previous test wrote these into its own container, which is gone.
    assert (container / "etc" / "hostname").read_text() == ""
    assert (container / "var" / "lib" / "app" / "data").read_text() == "v2"


def test_two_containers_side_by_side(container: pathlib.Path, image: Image, ovl2_container: ContainerFactory) -> None:
    other = ovl2_container(image, name="sidecar").root
    (other / "only-in-sidecar").write_text("x")
    assert not (container / "only-in-sidecar").exists()
    assert len(mounts_under(image.store.home)) == 2


def test_a_failing_body_still_unmounts(image: Image) -> None:
    d = image.store
    d.create_rw("crashy", image.top)
    try:
        with pytest.raises(RuntimeError, match="harness failure"):
            with d.mounted("crashy") as root:
                (root / "partial").write_text("half")
                raise RuntimeError("harness failure")
        assert mounts_under(image.store.home) == []
    finally:
        d.remove("crashy")
