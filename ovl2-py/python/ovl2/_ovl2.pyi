"""Type stubs for the native module ``ovl2._ovl2`` (hand-written; keep in step with src/lib.rs).

Errors: every method raises a subclass of :class:`ovl2.Error` (an ``OSError``), chosen by
what went wrong: ``InvalidIdError`` for a malformed id, ``LayerNotFoundError``,
``LayerExistsError``, ``MaxDepthError``, ``BusyError``, ``UnsupportedError``,
``PermissionDeniedError``, ``CorruptStoreError``, ``CorruptArchiveError``. Calling a method
of a closed :class:`Driver` raises ``ValueError``.
"""

from __future__ import annotations

import os
import pathlib
from types import TracebackType
from typing import List, Literal, Mapping, Optional, Protocol, Sequence, Tuple, Type, Union, final

__all__ = [
    "__version__",
    "KERNEL_MAX_DEPTH",
    "DOCKER_MAX_DEPTH",
    "Driver",
    "Layer",
    "Problem",
    "Mount",
    "Mounted",
    "docker_init_entries",
    "ApplyStats",
    "DiffStats",
    "Usage",
]

__version__: str
"""The version of ovl2 (the Rust crates' version)."""

KERNEL_MAX_DEPTH: int
"""The kernel's limit on lower layers in one overlay mount (500); the default max_depth.
A layer with 500 lower layers still mounts read-write."""

DOCKER_MAX_DEPTH: int
"""Docker's own depth limit (a layer may have 128 lower layers), for stores Docker must
also be able to mount."""

from ovl2._types import Change

_StrPath = Union[str, "os.PathLike[str]"]
_FsPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
"""A path as ``os.fsencode`` takes it: a path that is not UTF-8 may be given as bytes or as
a str with surrogate escapes (``os.fsdecode``)."""
_InitEntry = Union[Tuple[Literal["dir", "file"], str], Tuple[Literal["symlink"], str, str]]
"""An init-layer entry: ``("dir", "/proc")``, ``("file", "/etc/hosts")`` or
``("symlink", "/etc/mtab", "/proc/mounts")``; paths are absolute inside the container."""

def docker_init_entries() -> list[_InitEntry]:
    """Docker's init entries (``/dev/pts``, ``/etc/hosts``, ``/.dockerenv``, ...), for
    extending and passing to :meth:`Driver.create_container`."""


class _Reader(Protocol):
    """A binary file object to read a layer from: anything with ``read(size)``."""

    def read(self, size: int, /) -> Optional[bytes]: ...

class _Writer(Protocol):
    """A binary file object to write a layer to: anything with ``write(data)``."""

    def write(self, data: bytes, /) -> Optional[int]: ...

_Source = Union[_StrPath, bytes, bytearray, _Reader, int]
_Dest = Union[_StrPath, _Writer, int]

@final
class Driver:
    """An open overlay2 layer store, in exactly Docker's on-disk format.

    Safe to share between threads; several processes may open the same home at once.
    Use it as a context manager (or call :meth:`close`) to release the store's descriptors.
    """

    def __new__(
        cls,
        home: _FsPath,
        *,
        sync: bool = True,
        max_depth: int = 500,
        repair_on_open: bool = True,
        root: Optional[Tuple[int, int]] = None,
        mount_strategy: Optional[Literal["auto", "new", "legacy"]] = None,
        disabled_features: Optional[Sequence[str]] = None,
        open_mode: Literal["create", "existing", "read_only"] = "create",
    ) -> Driver:
        """Opens the store at ``home`` as ``open_mode`` allows.

        A directory that exists, is not empty and is not a store (it has no ``l/``) is
        refused and left untouched, whatever the mode.

        :param sync: fsync metadata files and directories so a power cut cannot lose them.
        :param max_depth: most lower layers a layer may have (1..500), counted as Docker
            counts them (a base layer has depth 0); use ``DOCKER_MAX_DEPTH`` when Docker
            must mount the store too.
        :param repair_on_open: repair what a crash or another tool left behind.
        :param root: ``(uid, gid)`` owning ``diff``/``work``/``merged`` (the containers'
            remapped root); default this process's euid/egid.
        :param mount_strategy: how layers are mounted: ``"new"`` (``fsopen``/``lowerdir+``,
            layers as fds where the kernel allows), ``"legacy"`` (``mount(2)`` with an
            option string) or ``"auto"`` (the best available). None: ``$OVL2_MOUNT_STRATEGY``,
            else ``"auto"``.
        :param disabled_features: kernel features to treat as absent (names as
            :meth:`features` reports them, e.g. ``"lowerdir+fd"``); works around a buggy
            kernel. None or empty: ``$OVL2_DISABLE_FEATURES`` (comma-separated).
        :param open_mode: ``"create"`` (the default) makes a store in a missing or empty
            directory; ``"existing"`` opens only an existing store; ``"read_only"`` opens an
            existing store and never writes to it (nothing created, chmod-ed or chown-ed, no
            repair on open; writing calls raise :class:`PermissionDeniedError`, errno EROFS),
            which works on a read-only file system and on a store Docker wrote.
        :raises InvalidArgumentError: ``max_depth`` out of range, an unknown strategy, feature
            or open mode, or ``home`` is a non-empty directory that is not a store.
        :raises LayerNotFoundError: ``home`` is missing and ``open_mode`` does not create.
        :raises ValueError: ``home`` contains a NUL byte (as Python's ``os`` functions).
        :raises Error: the home cannot be created or opened (errno ENOTDIR: not a directory).
        """
    @property
    def home(self) -> pathlib.Path:
        """The store's home directory, absolute and lexically clean; ``os.fsencode`` of it
        gives the exact bytes, also for a home that is not UTF-8."""
    @property
    def max_depth(self) -> int:
        """The deepest chain this store allows."""
    @property
    def sync(self) -> bool:
        """Whether metadata writes are fsynced."""
    @property
    def mount_strategy(self) -> Literal["auto", "new", "legacy"]:
        """The mount strategy in force."""
    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
    def close(self) -> None:
        """Releases the store. Calls already running finish first; later calls raise ValueError.

        Mount references this Driver took with :meth:`get` are given back (a layer nobody else
        holds is unmounted); persistent references stay until a :meth:`put`."""
    def __enter__(self) -> Driver: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool:
        """Closes the store; never suppresses the exception."""
    def create(
        self,
        id: str,
        parent: Optional[str] = None,
        *,
        storage_opt: Optional[Mapping[str, str]] = None,
        mount_label: Optional[str] = None,
    ) -> None:
        """Creates the read-only (image) layer ``id`` on top of ``parent`` (None: a base layer).

        :raises InvalidIdError: ``id`` or ``parent`` is malformed.
        :raises LayerExistsError: ``id`` exists.
        :raises LayerNotFoundError: ``parent`` does not exist.
        :raises MaxDepthError: the chain would exceed ``max_depth``.
        :raises UnsupportedError: ``storage_opt`` has ``size`` (needs xfs quotas).
        :raises InvalidArgumentError: ``storage_opt`` has an unknown key.
        """
    def create_rw(
        self,
        id: str,
        parent: Optional[str] = None,
        *,
        storage_opt: Optional[Mapping[str, str]] = None,
        mount_label: Optional[str] = None,
    ) -> None:
        """Creates a read-write (container) layer; same layout and errors as :meth:`create`."""
    def remove(self, id: str, force: bool = False) -> None:
        """Removes a layer: atomically out of sight first, then its files.

        ``force=True`` unmounts it first instead of refusing a mounted layer.

        :raises LayerNotFoundError: no such layer.
        :raises BusyError: other layers build on it (see ``remove_tree``, with or without
            ``force``), or it is mounted (unless ``force``).
        """
    def remove_tree(self, id: str, force: bool = False) -> List[str]:
        """Removes a layer and every layer built on it, deepest first, so a crash midway
        never leaves a layer whose parent is gone; returns the removed ids in that order.

        :raises LayerNotFoundError: no such layer.
        :raises BusyError: one of them is mounted (unless ``force``, which unmounts them
            first); nothing is removed then.
        """
    def exists(self, id: str) -> bool:
        """Whether a layer directory named ``id`` exists.

        :raises InvalidIdError: ``id`` is malformed.
        """
    def parent(self, id: str) -> Optional[str]:
        """The direct parent of ``id``, or None for a base layer.

        :raises LayerNotFoundError: no such layer.
        :raises CorruptStoreError: the layer's ``lower`` file is damaged.
        """
    def metadata(self, id: str) -> dict[str, str]:
        """Docker's ``GetMetadata``: ``LowerDir`` (only with a parent), ``UpperDir``,
        ``WorkDir`` and ``MergedDir``, as absolute paths. Paths are ``str`` as ``os.fsdecode``
        makes them, so ``os.fsencode`` gives their exact bytes under a home that is not UTF-8.

        :raises LayerNotFoundError: no such layer.
        """
    def status(self) -> dict[str, str]:
        """Ordered key/value pairs: Docker's (``Backing Filesystem``, ``Supports d_type``, ...)
        first, then ovl2's."""
    def layers(self) -> list[Layer]:
        """Every layer with its parent and depth, sorted by id."""
    def check(self, repair: bool = False) -> list[Problem]:
        """Problems in the store (stale staging dirs, broken links, ...).

        With ``repair=True`` fixes what can be fixed and returns both what was fixed
        (``repaired=True``) and what remains. Repair never deletes a layer directory.
        """

    def create_container(
        self,
        ctr: str,
        image_top: str,
        *,
        init_entries: Optional[Sequence[_InitEntry]] = None,
        root: Optional[Tuple[int, int]] = None,
        storage_opt: Optional[Mapping[str, str]] = None,
        mount_label: Optional[str] = None,
    ) -> None:
        """Creates a container as Docker does: ``<ctr>-init`` on ``image_top``, filled with
        the init entries through a real mount (so copy-ups and whiteouts are Docker's), then
        the container layer ``<ctr>`` on it. All or nothing, also across a crash.

        :param init_entries: default :func:`docker_init_entries`.
        :param root: ``(uid, gid)`` owning new init entries (user-namespaced containers).
        :raises LayerNotFoundError: no ``image_top``.
        :raises LayerExistsError: ``ctr`` or ``ctr-init`` exists.
        :raises ValueError: a malformed init entry.
        """
    def remove_container(self, ctr: str, force: bool = False) -> None:
        """Removes ``<ctr>`` and ``<ctr>-init``.

        :raises BusyError: the container is mounted (``force=True`` unmounts it first).
        :raises LayerNotFoundError: neither layer exists.
        """
    def apply_diff(
        self,
        id: str,
        source: _Source,
        parent: Optional[str] = None,
        *,
        sync: Optional[bool] = None,
        expect_digest: Optional[str] = None,
    ) -> ApplyStats:
        """Applies a layer tar (plain, gzip or zstd; detected) to the empty layer ``id``.

        Nothing outside the layer's ``diff`` is created, changed or followed, whatever the tar
        holds; on any error the layer is left as it was.

        :param source: a path (str or PathLike), ``bytes``/``bytearray``, a binary file
            object (anything with ``read(n)``), or an int fd (read from its current offset;
            the caller keeps it open). Paths, bytes and fds are read without the GIL.
        :param parent: omitted (None): the layer's own parent, the fast path that writes
            the tar straight into the layer's ``diff``. ``""`` is Docker's "no parent"; it
            and any layer other than the layer's own parent apply through the layer's mounted
            view, as Docker's naive ``ApplyDiff`` does (whiteouts delete what the lower layers
            show; the returned size is the sum of the tar's entry sizes, as Docker returns).
        :param sync: flush the data to disk before returning; default the store's ``sync``.
        :param expect_digest: the DiffID the uncompressed stream must have
            (``sha256:<hex>``, as in an image config); checked before the layer is swapped in.
        :raises CorruptArchiveError: the stream is malformed, truncated or hostile, or its
            digest is not ``expect_digest``.
        :raises InvalidArgumentError: the layer already has content.
        :raises LayerNotFoundError: no such layer, or no layer ``parent``.
        :raises BusyError: the layer is mounted, or a mounted layer builds on it.
        :raises OSError: a ``source`` path cannot be opened (``FileNotFoundError``, ...);
            an exception raised by a file object propagates unchanged.
        """
    def diff(
        self, id: str, dest: _Dest, parent: Optional[str] = None, *, digest: bool = True
    ) -> DiffStats:
        """Writes layer ``id`` as a tar in Docker's layer format (deterministic bytes).

        :param dest: a path (created or truncated), a binary file object (anything with
            ``write``; ``flush`` is called at the end) or an int fd.
        :param parent: the layer's own parent (None for a base layer) for the layer's own
            changes; any other layer (None included, for a layer that has a parent) exports
            what differs between the two merged views, as Docker's naive diff does. ``""``
            (Docker's spelling) is the same as None.
        :param digest: compute the stream's sha256 (as the stream is written); turn it off when
            hashing the stream yourself.
        :raises LayerNotFoundError: no such layer.
        """
    def import_chain(
        self,
        top: str,
        sources: Sequence[_Source],
        parent: Optional[str] = None,
        *,
        sync: Optional[bool] = None,
    ) -> list[tuple[str, ApplyStats]]:
        """Creates one layer per tarball in ``sources`` (base first) on top of ``parent``
        and applies each tarball into its layer: an image's layers in one call. The top
        layer is ``top``, those below it ``<top>-1``, ``<top>-2``, ... from the base.

        All or nothing: on any error the layers it made are removed and ``parent`` loses the
        ``committed`` marker they gave it; if the process is killed half way, the next open
        (or :meth:`repair`) does the same.

        :param sources: each as :meth:`apply_diff` takes it (a path, bytes, a binary file
            object or an int fd); paths are opened before anything is created.
        :param parent: the layer the chain builds on; None or ``""`` for none.
        :param sync: flush each layer's data to disk; default the store's ``sync``.
        :returns: ``(id, stats)`` for each layer made, base first.
        :raises InvalidArgumentError: ``sources`` is empty.
        :raises LayerExistsError: one of the ids is taken.
        :raises LayerNotFoundError: no layer ``parent``.
        :raises CorruptArchiveError: a tarball is malformed, truncated or hostile.
        :raises OSError: a ``sources`` path cannot be opened; an exception raised by a file
            object propagates unchanged.
        """
    def usage(self, id: str) -> Usage:
        """What layer ``id``'s own files (its ``diff``) occupy on disk, as ``ovl2 du`` and
        containerd's snapshot usage count: never crossing a mount or following a symlink.
        Unlike :meth:`diff_size` (Docker's apparent size of the layer's changes) this is what
        the layer costs on disk.

        :raises LayerNotFoundError: no such layer.
        """
    def diff_size(self, id: str, parent: Optional[str] = None) -> int:
        """Docker's ``DiffSize``: with the layer's own parent, the size of its ``diff`` (what
        :meth:`apply_diff` returned); against another layer, the sizes of the
        non-directories it adds or modifies, hardlinks counted once. ``parent=""`` is the
        same as None (no parent)."""
    def changes(self, id: str, parent: Optional[str] = None) -> list[Change]:
        """Paths layer ``id`` adds, modifies or deletes relative to ``parent``, sorted by
        path, by Docker's rules.

        With the layer's own parent only what its ``diff`` mentions is looked up (fast); any
        other ``parent`` (None or ``""``, for a layer that has a parent, means an empty base)
        compares the two merged views in full, as Docker's naive diff does.
        """
    def features(self) -> list[str]:
        """Kernel mount features found by probing (cached per store and boot), minus the
        disabled ones: ``fsopen``, ``lowerdir+``, ``lowerdir+fd``, ``O_PATH-fds``,
        ``index-param``, ``userxattr``."""
    def get(
        self,
        id: str,
        mount_label: Optional[str] = None,
        *,
        readonly: bool = False,
        volatile: bool = False,
        persistent: bool = False,
    ) -> str:
        """Docker's ``Get``: mounts the layer (or takes another reference to its mount) and
        returns the merged path. A base layer returns its ``diff`` path without mounting.

        References are counted across threads and processes; each ``get`` needs one
        :meth:`put`. References of a process that dies are dropped by the next ``get``.

        :param mount_label: SELinux label (``context=``).
        :param readonly: mount without an upper even if the layer is not committed.
        :param volatile: mount with ``volatile`` (no syncs); for throwaway containers.
        :param persistent: the reference belongs to the store and survives this process.
        :raises LayerNotFoundError: no such layer.
        :raises BusyError: already mounted with the other read-only/read-write mode.
        :raises PermissionDeniedError: mounting needs privileges this process lacks.
        """
    def put(self, id: str) -> None:
        """Docker's ``Put``: drops one reference; unmounts with the last one.

        :raises InvalidArgumentError: the layer is not mounted.
        :raises LayerNotFoundError: no such layer.
        """
    def mounted(
        self,
        id: str,
        mount_label: Optional[str] = None,
        *,
        readonly: bool = False,
        volatile: bool = False,
    ) -> Mounted:
        r"""A context manager: ``get`` on entry, yielding the merged path as a
        ``pathlib.Path``, and ``put`` on exit, also when the body raises::

            with driver.mounted("ctr") as root:
                (root / "etc" / "hostname").write_text("box\n")
        """
    def mounts(self) -> list[Mount]:
        """Every layer this store has mounted (or found mounted), with reference counts."""
    def cleanup(self) -> None:
        """Docker's ``Cleanup``: unmounts every layer of the store, whoever holds it, and
        drops all references."""

@final
class Mounted:
    """Returned by :meth:`Driver.mounted`; use it in a ``with`` statement."""

    def __enter__(self) -> pathlib.Path: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool:
        """Puts the layer; never suppresses the exception."""

@final
class Mount:
    """One mounted layer as :meth:`Driver.mounts` reports it."""

    @property
    def id(self) -> str:
        """Layer id."""
    @property
    def path(self) -> pathlib.Path:
        """The mount point, ``<home>/<id>/merged``."""
    @property
    def count(self) -> int:
        """All references."""
    @property
    def persistent(self) -> int:
        """References held by the store (``get(..., persistent=True)``)."""
    @property
    def processes(self) -> int:
        """References held by live processes."""
    @property
    def readonly(self) -> bool:
        """Mounted without an upper."""
    @property
    def method(self) -> str:
        """How it was mounted: ``new-fd``, ``legacy-relative``, ..."""
    @property
    def mounted(self) -> bool:
        """Whether the kernel really has it mounted."""

@final
class ApplyStats:
    """What :meth:`Driver.apply_diff` did."""

    @property
    def size(self) -> int:
        """Docker's ApplyDiff size: lstat sizes of the layer's non-directories, hardlinks once."""
    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of the uncompressed tar (the layer's DiffID)."""
    @property
    def tar_bytes(self) -> int:
        """Length of the uncompressed tar."""
    @property
    def compression(self) -> Literal["none", "gzip", "zstd"]:
        """How the input was compressed."""
    @property
    def entries(self) -> int:
        """Tar entries read (extension headers not counted)."""
    @property
    def files(self) -> int:
        """Regular files written."""
    @property
    def dirs(self) -> int:
        """Directories created or updated."""
    @property
    def symlinks(self) -> int:
        """Symlinks created."""
    @property
    def hardlinks(self) -> int:
        """Hardlinks created."""
    @property
    def whiteouts(self) -> int:
        """``.wh.NAME`` entries turned into overlay whiteouts."""
    @property
    def opaque_dirs(self) -> int:
        """Directories marked opaque (``.wh..wh..opq``)."""
    @property
    def special(self) -> int:
        """Character and block devices and fifos created."""
    @property
    def skipped(self) -> int:
        """Entries deliberately not applied (PAX global headers, AUFS metadata, devices in a
        user namespace)."""
    @property
    def dropped_xattrs(self) -> int:
        """Overlay-private xattrs found and dropped."""

@final
class DiffStats:
    """What :meth:`Driver.diff` wrote."""

    @property
    def tar_bytes(self) -> int:
        """Length of the tar stream."""
    @property
    def digest(self) -> Optional[str]:
        """``sha256:<hex>`` of the tar stream (the layer's DiffID); None with ``digest=False``."""
    @property
    def entries(self) -> int:
        """Tar entries written (whiteouts and opaque markers included)."""

@final
class Usage:
    """What :meth:`Driver.usage` measured. Immutable, comparable."""

    @property
    def bytes(self) -> int:
        """Bytes allocated (``st_blocks`` × 512, as ``du`` counts), every inode once."""
    @property
    def inodes(self) -> int:
        """Distinct inodes: hardlinks once, the layer's ``diff`` directory included."""

@final
class Layer:
    """One layer as :meth:`Driver.layers` reports it. Immutable, comparable, hashable."""

    @property
    def id(self) -> str:
        """The caller's id."""
    @property
    def parent(self) -> Optional[str]:
        """The direct parent, None for a base layer."""
    @property
    def depth(self) -> int:
        """The number of lower layers (entries in ``lower``): 0 for a base layer."""
    @property
    def orphan(self) -> bool:
        """Not a base layer, but its parent is gone from the store (``parent`` is then None
        and it cannot mount); ``check()`` names the command that resolves it."""
    @property
    def short_id(self) -> Optional[str]:
        """The 26-character name under ``l/``, when the ``link`` file is readable."""

@final
class Problem:
    """One problem :meth:`Driver.check` found."""

    @property
    def layer(self) -> Optional[str]:
        """The layer concerned, None for store-wide problems."""
    @property
    def kind(self) -> str:
        """The kind as a snake_case name: ``stale_staging``, ``missing_link``, ``dangling_short_link``, ..."""
    @property
    def detail(self) -> str:
        """A sentence naming the file and what was found."""
    @property
    def repairable(self) -> bool:
        """Whether ``check(repair=True)`` can fix it."""
    @property
    def repaired(self) -> bool:
        """Whether this call fixed it (only ever True with ``repair=True``)."""
