"""pytest fixtures for tests that need layers, images and containers (loaded automatically:
the ``ovl2`` distribution registers this module as a ``pytest11`` plugin).

- ``ovl2_store``: a fresh :class:`ovl2.Driver` in the test's ``tmp_path``; at teardown nothing
  may be left mounted in it (a leftover mount is unmounted and fails the test).
- ``ovl2_image``: a factory, ``ovl2_image(*layers, name=None, parent=None)``, building an
  :class:`ovl2.testing.Image` in ``ovl2_store`` from layer dicts, tarball bytes or paths.
- ``ovl2_container``: a factory, ``ovl2_container(image, name=None, init_entries=None)``,
  returning a mounted :class:`ovl2.testing.Container` (``<id>-init`` + ``<id>``, as Docker
  makes one); unmounted and removed at teardown.
- ``ovl2_store_options``: the keyword arguments ``ovl2_store`` opens the store with
  (default ``{"sync": False}``); override it to change them.

``ovl2_container`` needs root and overlayfs; without them the test is skipped, or fails with
``--ovl2-require-mount`` (ini option ``ovl2_require_mount = true``, or environment
``OVL2_REQUIRE_MOUNT=1``), so a CI run cannot lose those tests silently.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Sequence, Union

import pytest

from ._ovl2 import Driver
from .testing import Container, Image, LayerSource, build_image, mounts_under, start_container

if TYPE_CHECKING:
    from ._ovl2 import _InitEntry

__all__ = [
    "ImageFactory",
    "ContainerFactory",
    "need_mounts",
    "ovl2_store_options",
    "ovl2_store",
    "ovl2_image",
    "ovl2_container",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ovl2")
    group.addoption(
        "--ovl2-require-mount",
        action="store_true",
        default=False,
        help="fail, instead of skipping, tests whose ovl2 fixtures need root and overlayfs",
    )
    parser.addini("ovl2_require_mount", type="bool", default=False, help="same as --ovl2-require-mount")


def _mounts_required(config: pytest.Config) -> bool:
    return bool(
        config.getoption("ovl2_require_mount")
        or config.getini("ovl2_require_mount")
        or os.environ.get("OVL2_REQUIRE_MOUNT") == "1"
    )


def _overlay_available() -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == "overlay" for line in f if line.strip())
    except OSError:
        return False


def need_mounts(config: pytest.Config) -> None:
    """Skips the calling test unless this process can mount overlays (root and overlayfs);
    fails it instead when mounts are required (see the module's documentation)."""
    missing = "root" if os.geteuid() != 0 else "overlayfs" if not _overlay_available() else None
    if missing is None:
        return
    why = f"mounting overlays needs {missing}"
    if _mounts_required(config):
        pytest.fail(f"{why}, and mounts are required (--ovl2-require-mount / OVL2_REQUIRE_MOUNT=1)")
    pytest.skip(why)


@pytest.fixture
def ovl2_store_options() -> Dict[str, Any]:
    """Keyword arguments for :class:`ovl2.Driver` in ``ovl2_store``; override to change them.
    No fsync by default: a test's store does not outlive a power cut."""
    return {"sync": False}


@pytest.fixture
def ovl2_store(tmp_path: pathlib.Path, ovl2_store_options: Dict[str, Any]) -> Iterator[Driver]:
    """A fresh store in ``tmp_path / "store"``, closed after the test, which fails if it left
    anything mounted there (the mounts are undone first)."""
    home = tmp_path / "store"
    with Driver(home, **ovl2_store_options) as store:
        yield store
        leftover = mounts_under(home)
        held = [] if store.closed else [m.id for m in store.mounts()]
        if leftover or held:
            store.cleanup()
        assert (leftover, held) == ([], []), f"the test left mounts in its ovl2 store: {leftover or held}"


class ImageFactory:
    """``ovl2_image``: builds images in one store."""

    def __init__(self, store: Driver) -> None:
        self.store = store
        self._count = 0

    def __call__(
        self, *layers: LayerSource, name: Optional[str] = None, parent: Union[Image, str, None] = None
    ) -> Image:
        """An image of ``layers``, base first (see :func:`ovl2.testing.build_image`); layer
        ids are ``<name>-0``, ``<name>-1``, ... with ``name`` default ``image``, ``image2``, ...

        :param parent: an image (or a layer id) to build on.
        """
        self._count += 1
        if name is None:
            name = "image" if self._count == 1 else f"image{self._count}"
        return build_image(self.store, layers, name=name, parent=parent)


@pytest.fixture
def ovl2_image(ovl2_store: Driver) -> ImageFactory:
    """A factory building images in ``ovl2_store``:
    ``ovl2_image({"etc/os-release": "ID=x\\n"}, {"etc/motd": ovl2.testing.WHITEOUT})``."""
    return ImageFactory(ovl2_store)


class ContainerFactory:
    """``ovl2_container``: mounted containers, all taken down by :meth:`close`."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._count = 0

    def __call__(
        self,
        image: Image,
        *,
        name: Optional[str] = None,
        init_entries: Optional[Sequence[_InitEntry]] = None,
        volatile: bool = False,
    ) -> Container:
        """Creates a container on ``image`` (in the image's store) as Docker does and mounts
        it until the end of the test. ``name`` defaults to ``ctr``, ``ctr2``, ...

        :param init_entries: default :func:`ovl2.docker_init_entries`.
        :param volatile: mount with ``volatile`` (no syncs).
        """
        self._count += 1
        if name is None:
            name = "ctr" if self._count == 1 else f"ctr{self._count}"
        return self._stack.enter_context(
            start_container(image.store, image, name, init_entries=init_entries, volatile=volatile)
        )

    def close(self) -> None:
        """Unmounts and removes every container made, the newest first."""
        self._stack.close()


@pytest.fixture
def ovl2_container(request: pytest.FixtureRequest, ovl2_image: ImageFactory) -> Iterator[ContainerFactory]:
    """A factory of mounted containers: ``ctr = ovl2_container(ovl2_image({...}))``, then
    ``ctr.root`` is its root filesystem. Skips (or fails) the test where overlays cannot be
    mounted. Depends on ``ovl2_image`` so the containers are gone before ``ovl2_store`` checks
    for leftover mounts; an image from another store works too."""
    need_mounts(request.config)
    factory = ContainerFactory()
    try:
        yield factory
    finally:
        factory.close()

