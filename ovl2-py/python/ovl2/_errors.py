"""The exceptions ovl2 raises.

Every one is an ``OSError`` built as ``Class(errno, message)``: ``.errno`` is the errno the
driver reports (``ENOENT`` for a missing layer, ``EBUSY`` for a busy one, ...) and
``.strerror`` the driver's message, which names the layer and what was wrong.
The native module picks the class from the core's error kind (``ovl2-py/src/errors.rs``).

The classes also fit where Python's own ``os`` functions put the same errno, so code written
for ``os`` catches them: a missing layer is a ``FileNotFoundError``, an existing one a
``FileExistsError``, a bad argument a ``ValueError``, a refused permission a
``PermissionError``. ``BusyError`` is a plain ``OSError`` with errno ``EBUSY``, as
``os.rmdir`` raises for a mount point (``BlockingIOError`` is Python's class for ``EAGAIN``).
"""

from __future__ import annotations

__all__ = [
    "Error",
    "InvalidArgumentError",
    "InvalidIdError",
    "LayerNotFoundError",
    "LayerExistsError",
    "MaxDepthError",
    "BusyError",
    "UnsupportedError",
    "PermissionDeniedError",
    "CorruptStoreError",
    "CorruptArchiveError",
]


class Error(OSError):
    """Base class of every ovl2 error; also raised as-is for other I/O failures."""


class InvalidArgumentError(Error, ValueError):
    """An argument was malformed (an unknown storage option, a bad option value, ...). errno EINVAL."""


class InvalidIdError(InvalidArgumentError):
    """A layer id broke a naming rule (empty, contains '/', starts with '.', ...). errno EINVAL."""


class LayerNotFoundError(Error, FileNotFoundError):
    """The layer (or store home) you named does not exist. errno ENOENT.

    A file missing inside an existing layer is a plain :class:`Error` (errno ENOENT), not this.

    Also a ``FileNotFoundError``, the class ``os`` raises for ENOENT.
    """


class LayerExistsError(Error, FileExistsError):
    """A layer with that id already exists. errno EEXIST.

    Also a ``FileExistsError``, the class ``os`` raises for EEXIST.
    """


class MaxDepthError(Error):
    """The new layer's chain would be deeper than the store's max_depth. errno ETOOMANYREFS."""


class BusyError(Error):
    """The layer is in use: other layers build on it, it is mounted, or another process holds it. errno EBUSY.

    Like ``os`` for EBUSY, a plain ``OSError`` (not a ``BlockingIOError``, which means EAGAIN):
    ``except OSError as e: if e.errno == errno.EBUSY`` catches it.
    """


class UnsupportedError(Error):
    """The kernel or filesystem lacks what was asked for (for example the "size" storage option). errno EOPNOTSUPP."""


class PermissionDeniedError(Error, PermissionError):
    """The operation is not permitted for this process (EPERM, EACCES or EROFS)."""


class CorruptStoreError(Error):
    """The store on disk is damaged in a way the operation cannot work around; see Driver.check(). errno EUCLEAN."""


class CorruptArchiveError(Error):
    """A layer archive (tar, gzip or zstd stream) is malformed, truncated or hostile. errno EBADMSG."""
