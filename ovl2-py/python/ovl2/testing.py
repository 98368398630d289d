"""Building images and containers in a store for tests, without pytest.

The pytest plugin (:mod:`ovl2.pytest_plugin`, loaded automatically once ovl2 is installed)
wraps these in fixtures; use them directly for a store of your own, e.g. in a module-scoped
fixture that builds an image once::

    from ovl2.testing import WHITEOUT, build_image

    with ovl2.Driver(home, sync=False) as d:
        image = build_image(d, [{"etc/os-release": "ID=test\\n"}, {"etc/motd": WHITEOUT}])
        with start_container(d, image, "ctr") as ctr:
            assert (ctr.root / "etc" / "os-release").read_text() == "ID=test\\n"

A layer is given as a dict of paths to contents (see :data:`Contents`), as the bytes of a
layer tarball, as a path to one, or as a binary file object: whatever
:meth:`ovl2.Driver.apply_diff` reads (plain, gzip or zstd).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip as _gzip
import io
import os
import pathlib
import re
import tarfile
from typing import IO, TYPE_CHECKING, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from ._ovl2 import Driver
from ._types import Change

if TYPE_CHECKING:
    from ._ovl2 import _InitEntry

__all__ = [
    "File",
    "Dir",
    "Symlink",
    "Hardlink",
    "Whiteout",
    "Opaque",
    "WHITEOUT",
    "OPAQUE",
    "Contents",
    "LayerSource",
    "layer_tar",
    "Image",
    "build_image",
    "Container",
    "start_container",
    "mounts_under",
]

MTIME = 1_700_000_000
"""The modification time of every entry :func:`layer_tar` writes, so equal dicts give equal
tarballs (and equal DiffIDs)."""


@dataclasses.dataclass(frozen=True)
class File:
    """A regular file; a plain ``str`` (UTF-8) or ``bytes`` value is a ``File`` with mode 0644."""

    data: Union[str, bytes] = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclasses.dataclass(frozen=True)
class Dir:
    """A directory (parents missing from a layer are created by the apply, as Docker does)."""

    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclasses.dataclass(frozen=True)
class Symlink:
    """A symbolic link to ``target`` (stored as given, never followed by the apply)."""

    target: str


@dataclasses.dataclass(frozen=True)
class Hardlink:
    """A hard link to ``target``, a path earlier in the same layer."""

    target: str


@dataclasses.dataclass(frozen=True)
class Whiteout:
    """Deletes the path from the layers below (written as Docker does: ``.wh.NAME``)."""


@dataclasses.dataclass(frozen=True)
class Opaque:
    """A directory that hides everything the layers below have in it (``.wh..wh..opq``);
    entries this layer puts under it stay."""

    mode: int = 0o755


WHITEOUT = Whiteout()
"""``{"path": WHITEOUT}`` deletes ``path`` from the image."""
OPAQUE = Opaque()
"""``{"dir": OPAQUE}`` replaces the directory of the layers below by an empty one."""

Contents = Union[str, bytes, File, Dir, Symlink, Hardlink, Whiteout, Opaque]
"""What a path of a layer dict holds."""

LayerSource = Union[Mapping[str, Contents], bytes, bytearray, str, "os.PathLike[str]", IO[bytes]]
"""One layer: a dict of paths (relative, ``/``-separated) to :data:`Contents`, the bytes of a
layer tarball, a path to one, or a binary file object."""


def layer_tar(entries: Mapping[str, Contents], *, gzip: bool = False) -> bytes:
    """A layer tarball as Docker writes one, from a dict of paths to contents, in the dict's
    order (a hardlink's target must come before it). With ``gzip=True`` it is compressed.

    :raises ValueError: a path is absolute or empty, or a value is not :data:`Contents`.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(
            name: str, kind: bytes, mode: int = 0o644, data: bytes = b"", link: str = "", uid: int = 0, gid: int = 0
        ) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname = kind, mode, link
            info.uid, info.gid, info.mtime, info.size = uid, gid, MTIME, len(data)
            tar.addfile(info, io.BytesIO(data))

        # A hard link's header carries its file's metadata, as tar writers do: the apply sets
        # the link's (shared) mode and owner from it, as Docker's does.
        files: dict[str, File] = {}
        for path, what in entries.items():
            name = path.rstrip("/")
            if not name or name.startswith("/"):
                raise ValueError(f"layer path {path!r} must be relative and not empty")
            head, _, base = name.rpartition("/")
            if isinstance(what, (str, bytes)):
                what = File(what)
            if isinstance(what, File):
                data = what.data.encode() if isinstance(what.data, str) else what.data
                add(name, tarfile.REGTYPE, what.mode, data, uid=what.uid, gid=what.gid)
                files[name] = what
            elif isinstance(what, Dir):
                add(name, tarfile.DIRTYPE, what.mode, uid=what.uid, gid=what.gid)
            elif isinstance(what, Symlink):
                add(name, tarfile.SYMTYPE, 0o777, link=what.target)
            elif isinstance(what, Hardlink):
                target = what.target.strip("/")
                meta = files.get(target, File())
                add(name, tarfile.LNKTYPE, meta.mode, link=target, uid=meta.uid, gid=meta.gid)
            elif isinstance(what, Whiteout):
                add(f"{head}/.wh.{base}" if head else f".wh.{base}", tarfile.REGTYPE)
            elif isinstance(what, Opaque):
                add(name, tarfile.DIRTYPE, what.mode)
                add(f"{name}/.wh..wh..opq", tarfile.REGTYPE)
            else:
                raise ValueError(f"layer path {path!r}: {what!r} is not a file, dir, link, whiteout or opaque dir")
    raw = buf.getvalue()
    return _gzip.compress(raw, mtime=0) if gzip else raw


@dataclasses.dataclass(frozen=True)
class Image:
    """An image in a store: its layers, base first, each on the one before."""

    store: Driver
    layers: Tuple[str, ...]
    """Layer ids, base first."""
    digests: Tuple[str, ...]
    """Each layer's DiffID (``sha256:`` of its uncompressed tar), as in an image config."""

    @property
    def top(self) -> str:
        """The top layer, on which containers are created."""
        return self.layers[-1]


def build_image(
    store: Driver,
    layers: Sequence[LayerSource],
    *,
    name: str = "image",
    parent: Union[Image, str, None] = None,
) -> Image:
    """Creates one layer per source, each on the one before, and applies the source to it.
    Layers are named ``<name>-0``, ``<name>-1``, ...; the first builds on ``parent`` (an
    image or a layer id; None: a base layer). All or nothing: on an error the layers made so
    far are removed and the error raised.

    :raises ValueError: no layers, or a malformed dict (see :func:`layer_tar`).
    :raises ovl2.LayerExistsError: a layer of that name exists (pick another ``name``).
    :raises ovl2.CorruptArchiveError: a tarball is malformed or hostile.
    """
    if not layers:
        raise ValueError("an image needs at least one layer")
    below = parent.top if isinstance(parent, Image) else parent
    made: List[str] = []
    digests: List[str] = []
    try:
        for i, source in enumerate(layers):
            id = f"{name}-{i}"
            store.create(id, below)
            made.append(id)
            if isinstance(source, Mapping):
                source = layer_tar(source)
            digests.append(store.apply_diff(id, source).digest)
            below = id
    except BaseException:
        for id in reversed(made):
            with contextlib.suppress(Exception):
                store.remove(id)
        raise
    return Image(store, tuple(made), tuple(digests))


@dataclasses.dataclass(frozen=True)
class Container:
    """A mounted container: ``<id>-init`` on the image's top, ``<id>`` on that."""

    store: Driver
    id: str
    image: Image
    root: pathlib.Path
    """The container's root filesystem (the merged mount)."""

    @property
    def init_id(self) -> str:
        """The init layer, holding Docker's init entries (``/etc/hosts``, ``/.dockerenv``, ...)."""
        return self.id + "-init"

    def changes(self) -> List[Change]:
        """What the container changed, as ``docker diff`` shows it (against the init layer,
        so the init entries do not show)."""
        return self.store.changes(self.id, self.init_id)


@contextlib.contextmanager
def start_container(
    store: Driver,
    image: Image,
    id: str,
    *,
    init_entries: Optional[Sequence[_InitEntry]] = None,
    volatile: bool = False,
) -> Iterator[Container]:
    """Creates a container on ``image`` as Docker does and mounts it for the ``with`` body;
    afterwards unmounts it and removes both of its layers, also when the body raises.

    :param init_entries: default :func:`ovl2.docker_init_entries`.
    :param volatile: mount with ``volatile`` (no syncs), for throwaway containers.
    """
    store.create_container(id, image.top, init_entries=init_entries)
    try:
        with store.mounted(id, volatile=volatile) as root:
            yield Container(store, id, image, root)
    finally:
        store.remove_container(id, force=True)


def mounts_under(path: Union[str, "os.PathLike[str]"]) -> List[str]:
    """Mount points strictly below ``path`` in this mount namespace (from
    ``/proc/self/mountinfo``, octal escapes decoded)."""
    prefix = os.fspath(path).rstrip("/") + "/"
    out = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), line.split()[4])
            point = os.fsdecode(raw)
            if point.startswith(prefix):
                out.append(point)
    return out
