"""Building layer tarballs in memory for the tests, the way image layers are laid out."""

from __future__ import annotations

import gzip
import io
import tarfile
from typing import Union

Entry = Union[str, bytes, tuple[str, str]]
"""A file's content (str or bytes), ``("dir", "")``, ``("symlink", target)``,
``("hardlink", target)`` or ``("whiteout", "")``/``("opaque", "")`` for deletions."""


def layer_tar(entries: dict[str, Entry], *, gz: bool = False) -> bytes:
    """A layer tar: files, dirs and links by path, whiteouts as Docker writes them."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, what in entries.items():
            info = tarfile.TarInfo(path)
            info.mtime = 1_700_000_000
            data = b""
            if isinstance(what, (str, bytes)):
                data = what.encode() if isinstance(what, str) else what
                info.mode = 0o644
            elif what[0] == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif what[0] == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, what[1]
            elif what[0] == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, what[1]
            elif what[0] == "whiteout":
                head, _, name = path.rpartition("/")
                info.name = f"{head}/.wh.{name}" if head else f".wh.{name}"
            elif what[0] == "opaque":
                info.name = f"{path}/.wh..wh..opq"
            else:
                raise ValueError(what)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if gz else raw
