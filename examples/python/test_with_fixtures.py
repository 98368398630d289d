"""Testing with ovl2's pytest fixtures (docs/python-testing.md). Run as root:

    pip install ovl2 pytest && pytest examples/python/test_with_fixtures.py
"""

from __future__ import annotations

import ovl2
from ovl2.pytest_plugin import ContainerFactory, ImageFactory
from ovl2.testing import OPAQUE, WHITEOUT, Symlink


def test_an_image_as_a_container_sees_it(ovl2_image: ImageFactory, ovl2_container: ContainerFactory) -> None:
    image = ovl2_image(
        {"etc/os-release": "ID=demo\n", "etc/motd": "hi\n", "var/cache/apt/pkgs": "old"},
        {"etc/motd": WHITEOUT, "var/cache": OPAQUE, "bin/sh": Symlink("busybox")},
    )
    ctr = ovl2_container(image)

    assert (ctr.root / "etc" / "os-release").read_text() == "ID=demo\n"
    assert not (ctr.root / "etc" / "motd").exists()
    assert list((ctr.root / "var" / "cache").iterdir()) == []
    assert (ctr.root / ".dockerenv").exists()  # Docker's init layer is there

    (ctr.root / "etc" / "hostname").write_text("box\n")
    assert [str(c) for c in ctr.changes()] == ["C /etc", "C /etc/hostname"]


def test_a_store_of_your_own(ovl2_store: ovl2.Driver) -> None:
    ovl2_store.create("base")
    assert [layer.id for layer in ovl2_store.layers()] == ["base"]
