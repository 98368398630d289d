"""ovl2: Docker's overlay2 storage driver as a library.

Open a store with :class:`Driver` (also a context manager); every failure is an
:class:`Error`, a subclass of ``OSError``. Calls into the store release the GIL, so threads
sharing one ``Driver`` work in parallel.
"""

from __future__ import annotations

from ._errors import (
    BusyError,
    CorruptArchiveError,
    CorruptStoreError,
    Error,
    InvalidArgumentError,
    InvalidIdError,
    LayerExistsError,
    LayerNotFoundError,
    MaxDepthError,
    PermissionDeniedError,
    UnsupportedError,
)
from ._ovl2 import (
    DOCKER_MAX_DEPTH,
    KERNEL_MAX_DEPTH,
    ApplyStats,
    DiffStats,
    Driver,
    Layer,
    Mount,
    Mounted,
    Problem,
    Usage,
    __version__,
    docker_init_entries,
)
from ._types import Change, ChangeKind

__all__ = [
    "__version__",
    "DOCKER_MAX_DEPTH",
    "KERNEL_MAX_DEPTH",
    "Driver",
    "Layer",
    "Mount",
    "Mounted",
    "docker_init_entries",
    "Problem",
    "ApplyStats",
    "DiffStats",
    "Usage",
    "Change",
    "ChangeKind",
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
