"""Plain Python value types the native module returns."""

from __future__ import annotations

import enum
import typing

__all__ = ["Change", "ChangeKind"]


class ChangeKind(enum.Enum):
    """How a path changed, with Docker's numeric values (``archive.ChangeType``)."""

    MODIFY = 0
    """Present in both, with different content or metadata (Docker's ``C``)."""
    ADD = 1
    """Present only in the layer (``A``)."""
    DELETE = 2
    """Present only in the parent (``D``)."""


class Change(typing.NamedTuple):
    """One entry of :meth:`ovl2.Driver.changes`."""

    path: str
    """Absolute path inside the container filesystem (leading ``/``)."""
    kind: ChangeKind
    """What happened to it."""

    def __str__(self) -> str:
        """Docker's text form: ``C /path``, ``A /path`` or ``D /path``."""
        return f"{'CAD'[self.kind.value]} {self.path}"
