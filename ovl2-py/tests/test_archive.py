"""Layer archives: apply_diff from every kind of source, diff to every kind of dest,
diff_size, changes, and the errors of each."""

from __future__ import annotations

import enum
import errno
import gzip
import hashlib
import io
import os
import pathlib
import stat
import tarfile
from typing import Any, Callable

import pytest

import ovl2
from tarballs import Entry, layer_tar

BASE: dict[str, Entry] = {
    "etc": ("dir", ""),
    "etc/os-release": "NAME=test\n",
    "bin": ("dir", ""),
    "bin/tool": "#!/bin/sh\n",
    "bin/alias": ("symlink", "tool"),
    "bin/hard": ("hardlink", "bin/tool"),
    "var": ("dir", ""),
    "var/data": b"\x00\x01" * 1000,
}
BASE_TAR = layer_tar(BASE)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_base(home: pathlib.Path, id: str) -> None:
    diff = home / id / "diff"
    assert (diff / "etc" / "os-release").read_text() == "NAME=test\n"
    assert os.readlink(diff / "bin" / "alias") == "tool"
    assert os.stat(diff / "bin" / "hard").st_ino == os.stat(diff / "bin" / "tool").st_ino
    assert (diff / "var" / "data").read_bytes() == b"\x00\x01" * 1000
    assert stat.S_IMODE(os.stat(diff / "etc" / "os-release").st_mode) == 0o644


def test_apply_diff_from_bytes(driver: ovl2.Driver, home: pathlib.Path) -> None:
    driver.create("base")
    st = driver.apply_diff("base", BASE_TAR)
    assert st.digest == sha256(BASE_TAR)
    assert st.tar_bytes == len(BASE_TAR)
    assert st.compression == "none"
    assert (st.entries, st.files, st.dirs, st.symlinks, st.hardlinks) == (8, 3, 3, 1, 1)
    assert (st.whiteouts, st.opaque_dirs, st.special, st.skipped, st.dropped_xattrs) == (0, 0, 0, 0, 0)
    # Docker's size: non-directories by lstat size, the hardlink once.
    assert st.size == len("NAME=test\n") + len("#!/bin/sh\n") + len("tool") + 2000
    assert st.digest in repr(st)
    check_base(home, "base")


SOURCES: dict[str, Callable[[pathlib.Path, bytes], Any]] = {
    "str path": lambda tmp, data: str(_write(tmp, data)),
    "pathlib": lambda tmp, data: _write(tmp, data),
    "bytearray": lambda tmp, data: bytearray(data),
    "BytesIO": lambda tmp, data: io.BytesIO(data),
    "open file": lambda tmp, data: open(_write(tmp, data), "rb"),
    "unbuffered file": lambda tmp, data: open(_write(tmp, data), "rb", buffering=0),
}


def _write(tmp: pathlib.Path, data: bytes) -> pathlib.Path:
    p = tmp / "layer.tar"
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("kind", list(SOURCES))
def test_apply_diff_sources(driver: ovl2.Driver, home: pathlib.Path, tmp_path: pathlib.Path, kind: str) -> None:
    source = SOURCES[kind](tmp_path, BASE_TAR)
    driver.create("base")
    st = driver.apply_diff("base", source)
    if hasattr(source, "close"):
        source.close()
    assert st.digest == sha256(BASE_TAR)
    check_base(home, "base")


def test_apply_diff_from_an_fd_reads_from_its_offset_and_leaves_it_open(
    driver: ovl2.Driver, home: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "prefixed"
    path.write_bytes(b"HEADER" + BASE_TAR)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 6, os.SEEK_SET)
        driver.create("base")
        st = driver.apply_diff("base", fd)
        assert st.digest == sha256(BASE_TAR)
        # The caller's fd is still open, and shares the offset the apply advanced.
        assert os.lseek(fd, 0, os.SEEK_CUR) == 6 + len(BASE_TAR)
    finally:
        os.close(fd)
    check_base(home, "base")


def test_apply_diff_gzip(driver: ovl2.Driver, home: pathlib.Path) -> None:
    gz = layer_tar(BASE, gz=True)
    driver.create("base")
    st = driver.apply_diff("base", gz)
    assert st.compression == "gzip"
    # The digest is the DiffID: of the uncompressed tar.
    assert st.digest == sha256(gzip.decompress(gz))
    check_base(home, "base")


def test_apply_diff_a_child_with_whiteouts(driver: ovl2.Driver, home: pathlib.Path) -> None:
    driver.create("base")
    driver.apply_diff("base", BASE_TAR)
    driver.create("child", "base")
    entries: dict[str, Entry] = {
        "bin/tool": ("whiteout", ""),
        "var": ("opaque", ""),
        "etc/os-release": "NAME=child\n",
        "etc/new": "new\n",
    }
    tar = layer_tar(entries)
    st = driver.apply_diff("child", tar, "base")
    assert (st.whiteouts, st.opaque_dirs) == (1, 1)
    wh = os.lstat(home / "child" / "diff" / "bin" / "tool")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert driver.diff_size("child", "base") == st.size

    changes = driver.changes("child", "base")
    assert [(c.path, c.kind) for c in changes] == [
        ("/bin", ovl2.ChangeKind.MODIFY),
        ("/bin/tool", ovl2.ChangeKind.DELETE),
        ("/etc", ovl2.ChangeKind.MODIFY),
        ("/etc/new", ovl2.ChangeKind.ADD),
        ("/etc/os-release", ovl2.ChangeKind.MODIFY),
        ("/var", ovl2.ChangeKind.MODIFY),
        ("/var/data", ovl2.ChangeKind.DELETE),
    ]
    assert [str(c) for c in changes][:2] == ["C /bin", "D /bin/tool"]


def test_change_kind_is_an_enum_with_dockers_values() -> None:
    assert issubclass(ovl2.ChangeKind, enum.Enum)
    assert [(k.name, k.value) for k in ovl2.ChangeKind] == [("MODIFY", 0), ("ADD", 1), ("DELETE", 2)]
    c = ovl2.Change("/x", ovl2.ChangeKind.ADD)
    assert (c.path, c.kind) == c == ("/x", ovl2.ChangeKind.ADD)


def test_changes_of_a_base_layer_are_all_adds(driver: ovl2.Driver) -> None:
    driver.create("base")
    driver.apply_diff("base", BASE_TAR)
    changes = driver.changes("base")
    assert {c.kind for c in changes} == {ovl2.ChangeKind.ADD}
    assert [c.path for c in changes] == sorted("/" + p for p in BASE)


def test_diff_round_trips(driver: ovl2.Driver, home: pathlib.Path, tmp_path: pathlib.Path) -> None:
    driver.create("base")
    driver.apply_diff("base", BASE_TAR)

    # To a path, a file object and an fd: the same deterministic bytes each time.
    path = tmp_path / "out.tar"
    by_path = driver.diff("base", path)
    data = path.read_bytes()
    assert (by_path.tar_bytes, by_path.digest) == (len(data), sha256(data))
    assert by_path.entries == len(BASE)
    assert by_path.digest is not None and by_path.digest in repr(by_path)
    # Without the digest, the same bytes.
    fast = io.BytesIO()
    st = driver.diff("base", fast, digest=False)
    assert (st.digest, st.tar_bytes, fast.getvalue()) == (None, len(data), data)

    buf = io.BytesIO()
    assert driver.diff("base", buf).digest == by_path.digest
    assert buf.getvalue() == data

    with open(tmp_path / "fd.tar", "wb") as f:
        assert driver.diff("base", f.fileno()).digest == by_path.digest
    assert (tmp_path / "fd.tar").read_bytes() == data

    # Applied again, the export gives the same layer and the same digest.
    driver.create("copy")
    assert driver.apply_diff("copy", data).digest == by_path.digest
    check_base(home, "copy")
    assert driver.diff("copy", io.BytesIO()).digest == by_path.digest


def test_diff_to_a_file_object_that_writes_a_little_at_a_time(driver: ovl2.Driver) -> None:
    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()
            self.flushed = False

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            chunk = bytes(b)[:1000]
            self.data += chunk
            return len(chunk)

        def flush(self) -> None:
            self.flushed = True

    driver.create("base")
    driver.apply_diff("base", BASE_TAR)
    out = Trickle()
    st = driver.diff("base", out)
    assert st.digest == sha256(bytes(out.data))
    assert out.flushed


def test_diff_against_another_layer(driver: ovl2.Driver) -> None:
    # Against anything but its own parent, Docker's naive path: compare the merged views.
    driver.create("a")
    driver.apply_diff("a", layer_tar({"from-a": "a"}))
    driver.create("b", "a")
    driver.apply_diff("b", layer_tar({"from-b": "b"}), "a")
    own = io.BytesIO()
    driver.diff("b", own, "a")
    full = io.BytesIO()
    driver.diff("b", full, None)
    own.seek(0)
    full.seek(0)
    with tarfile.open(fileobj=own) as t:
        assert t.getnames() == ["from-b"]
    with tarfile.open(fileobj=full) as t:
        assert sorted(t.getnames()) == ["from-a", "from-b"]
    assert {c.path for c in driver.changes("b", None)} == {"/from-a", "/from-b"}
    with pytest.raises(ovl2.LayerNotFoundError):
        driver.diff("b", io.BytesIO(), "missing")
    with pytest.raises(ovl2.LayerNotFoundError):
        driver.diff("missing", io.BytesIO())


@pytest.mark.parametrize(
    "data,where",
    [
        (b"garbage" * 200, "header"),
        (BASE_TAR[:3000], "EOF"),
        (layer_tar({"../escape": "x"}), "climbs out"),
        (layer_tar({"a/../../escape": "x"}), "climbs out"),
    ],
)
def test_corrupt_or_hostile_archives(driver: ovl2.Driver, home: pathlib.Path, data: bytes, where: str) -> None:
    driver.create("base")
    with pytest.raises(ovl2.CorruptArchiveError) as ei:
        driver.apply_diff("base", data)
    assert ei.value.errno == errno.EBADMSG
    assert where in str(ei.value)
    # Nothing applied, nothing written outside; the layer takes a good archive afterwards.
    assert list((home / "base" / "diff").iterdir()) == []
    assert not (home / "escape").exists() and not (home.parent / "escape").exists()
    driver.apply_diff("base", BASE_TAR)


def test_apply_diff_argument_errors(driver: ovl2.Driver, tmp_path: pathlib.Path) -> None:
    driver.create("base")
    driver.create("child", "base")
    with pytest.raises(ovl2.LayerNotFoundError, match='"ghost"'):
        driver.apply_diff("child", BASE_TAR, "ghost")
    with pytest.raises(ovl2.LayerNotFoundError):
        driver.apply_diff("missing", BASE_TAR)
    with pytest.raises(ovl2.InvalidIdError):
        driver.apply_diff("../x", BASE_TAR)
    driver.apply_diff("base", BASE_TAR)
    with pytest.raises(ovl2.InvalidArgumentError, match="already has content"):
        driver.apply_diff("base", BASE_TAR)


def test_source_and_dest_type_errors(driver: ovl2.Driver, tmp_path: pathlib.Path) -> None:
    driver.create("base")
    untyped: Any = driver
    for bad in (None, 1.5, True, ["x"], object()):
        with pytest.raises(TypeError, match="source must be"):
            untyped.apply_diff("base", bad)
    with pytest.raises(TypeError, match="dest must be"):
        untyped.diff("base", b"bytes are not a destination")
    with pytest.raises(ValueError, match="negative"):
        driver.apply_diff("base", -1)
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as ei:
        driver.apply_diff("base", r)
    assert ei.value.errno == errno.EBADF


def test_missing_source_path_is_a_plain_file_not_found(driver: ovl2.Driver, tmp_path: pathlib.Path) -> None:
    driver.create("base")
    missing = tmp_path / "nope.tar"
    with pytest.raises(FileNotFoundError) as ei:
        driver.apply_diff("base", missing)
    assert not isinstance(ei.value, ovl2.Error)
    assert ei.value.filename == str(missing)
    with pytest.raises(FileNotFoundError):
        driver.diff("base", tmp_path / "no" / "such" / "dir.tar")


def test_a_file_objects_exception_propagates_unchanged(driver: ovl2.Driver, home: pathlib.Path) -> None:
    class Boom(Exception):
        pass

    class Failing(io.RawIOBase):
        def __init__(self) -> None:
            self.inner = io.BytesIO(BASE_TAR)
            self.calls = 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            self.calls += 1
            if self.calls == 2:
                raise Boom("network went away")
            return self.inner.read(min(n, 1024))

    driver.create("base")
    with pytest.raises(Boom, match="network went away"):
        driver.apply_diff("base", Failing())
    assert list((home / "base" / "diff").iterdir()) == []

    class FailingWriter(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            raise Boom("disk full")

    driver.apply_diff("base", BASE_TAR)
    with pytest.raises(Boom, match="disk full"):
        driver.diff("base", FailingWriter())


def test_a_read_returning_too_much_is_kept_for_the_next_read(driver: ovl2.Driver, home: pathlib.Path) -> None:
    class Generous:
        """Ignores the size asked for and returns big chunks."""

        def __init__(self) -> None:
            self.inner = io.BytesIO(BASE_TAR)

        def read(self, n: int) -> bytes:
            return self.inner.read(max(n, 1) * 3)

    driver.create("base")
    assert driver.apply_diff("base", Generous()).digest == sha256(BASE_TAR)
    check_base(home, "base")


def test_apply_diff_parent_defaults_to_the_layers_own(driver: ovl2.Driver, home: pathlib.Path) -> None:
    driver.create("base")
    driver.apply_diff("base", BASE_TAR)
    driver.create("child", "base")
    # Omitted: the layer's own parent, the native path (whiteouts stay overlay whiteouts).
    st = driver.apply_diff("child", layer_tar({"bin/tool": ("whiteout", ""), "new": "n\n"}))
    assert st.whiteouts == 1
    wh = os.lstat(home / "child" / "diff" / "bin" / "tool")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert driver.diff_size("child", "base") == st.size


def test_apply_diff_onto_no_parent_goes_through_the_mounted_view(mount_driver: ovl2.Driver, home: pathlib.Path) -> None:
    d = mount_driver
    d.create("base")
    d.apply_diff("base", BASE_TAR)
    d.create("upper", "base")
    d.apply_diff("upper", layer_tar({"etc/new": "new\n", "etc/os-release": "NAME=upper\n"}))
    # Docker's DriverBenchDiffApplyN: the whole tree of one child applied onto another with
    # parent "" (Docker's "no parent"). Only additions and changes: a whole-tree tar has no
    # whiteouts, so what the upper deleted would still show from base in the copy.
    whole = io.BytesIO()
    d.diff("upper", whole, "")
    d.create("copy", "base")
    st = d.apply_diff("copy", whole.getvalue(), "")
    # Docker's naive ApplyDiff returns the sum of the tar's entry sizes (symlinks count 0
    # there, while DiffSize counts their target length).
    with tarfile.open(fileobj=io.BytesIO(whole.getvalue())) as tf:
        assert st.size == sum(m.size for m in tf.getmembers())
    assert st.whiteouts == 0
    assert [(c.path, c.kind) for c in d.changes("copy", "")] == [(c.path, c.kind) for c in d.changes("upper", None)]
    # A whiteout in that mode deletes what the lower layers show.
    d.create("gone", "base")
    d.apply_diff("gone", layer_tar({"bin/tool": ("whiteout", "")}), "")
    with d.mounted("gone") as root:
        assert not (pathlib.Path(root) / "bin" / "tool").exists()
        assert (pathlib.Path(root) / "bin" / "alias").is_symlink()


def test_apply_into_a_layer_under_a_mount_is_busy(mount_driver: ovl2.Driver) -> None:
    d = mount_driver
    d.create("base")
    d.create_rw("ctr", "base")
    with d.mounted("ctr"):
        with pytest.raises(ovl2.BusyError, match='"ctr"'):
            d.apply_diff("base", layer_tar({"x": "y"}))
    d.apply_diff("base", layer_tar({"x": "y"}))


def test_apply_into_a_mounted_layer_is_busy(mount_driver: ovl2.Driver) -> None:
    d = mount_driver
    d.create("base")
    d.create_rw("ctr", "base")
    with d.mounted("ctr"):
        with pytest.raises(ovl2.BusyError):
            d.apply_diff("ctr", layer_tar({"x": "y"}), "base")


def test_expect_digest(driver: ovl2.Driver, home: pathlib.Path) -> None:
    driver.create("base")
    wrong = "sha256:" + "0" * 64
    with pytest.raises(ovl2.CorruptArchiveError) as ei:
        driver.apply_diff("base", BASE_TAR, expect_digest=wrong)
    assert wrong in str(ei.value)
    assert list((home / "base" / "diff").iterdir()) == [], "nothing applied on a mismatch"
    # A gzipped stream is checked by its uncompressed digest, the DiffID.
    st = driver.apply_diff("base", layer_tar(BASE, gz=True), expect_digest=sha256(BASE_TAR))
    assert st.digest == sha256(BASE_TAR)
    check_base(home, "base")


def test_sync_per_call(driver: ovl2.Driver) -> None:
    driver.create("a")
    driver.create("b")
    assert driver.apply_diff("a", BASE_TAR, sync=False).digest == driver.apply_diff("b", BASE_TAR, sync=True).digest


def test_import_chain_from_every_kind_of_source(driver: ovl2.Driver, home: pathlib.Path) -> None:
    driver.create("p")
    path = home.parent / "base.tar"
    path.write_bytes(BASE_TAR)
    mid = layer_tar({"app": ("dir", ""), "app/bin": "mid"})
    top = layer_tar({"etc/.wh.os-release": ""})
    fd = os.open(path, os.O_RDONLY)
    try:
        made = driver.import_chain("img", [path, mid, io.BytesIO(top), fd], "p", sync=False)
    finally:
        os.close(fd)
    assert [id for id, _ in made] == ["img-1", "img-2", "img-3", "img"]
    assert made[0][1].digest == sha256(BASE_TAR) == made[3][1].digest
    assert made[2][1].whiteouts == 1
    assert driver.parent("img-1") == "p" and driver.parent("img") == "img-3"
    check_base(home, "img-1")
    assert (home / "img-2" / "diff" / "app" / "bin").read_text() == "mid"
    assert driver.check() == []


def test_a_failed_import_chain_leaves_nothing(driver: ovl2.Driver, home: pathlib.Path) -> None:
    driver.create("p")
    before = sorted(p.name for p in home.iterdir())
    with pytest.raises(ovl2.CorruptArchiveError):
        driver.import_chain("bad", [BASE_TAR, b"not a tar" * 100], "p")
    assert not driver.exists("bad-1") and not driver.exists("bad")
    assert not (home / "p" / "committed").exists()

    class Boom(Exception):
        pass

    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            raise Boom("the source broke")

    # The file object's own exception propagates unchanged, and nothing is left.
    with pytest.raises(Boom):
        driver.import_chain("bad", [BASE_TAR, Failing()], "p")
    # A missing path raises before any layer is created.
    with pytest.raises(FileNotFoundError):
        driver.import_chain("bad", [BASE_TAR, home / "missing.tar"], "p")
    with pytest.raises(ovl2.InvalidArgumentError):
        driver.import_chain("bad", [])
    with pytest.raises(ovl2.LayerExistsError):
        driver.import_chain("p", [BASE_TAR])
    assert sorted(p.name for p in home.iterdir()) == before
    assert list((home / ".ovl2" / "pending").iterdir()) == []
    with pytest.raises(TypeError):
        driver.import_chain("bad", "not a list")


def test_usage_counts_the_layers_own_files(driver: ovl2.Driver, home: pathlib.Path) -> None:
    driver.create("base")
    empty = driver.usage("base")
    assert empty.inodes == 1 and empty.bytes == os.stat(home / "base" / "diff").st_blocks * 512
    driver.apply_diff("base", BASE_TAR)
    u = driver.usage("base")
    # diff/, 3 directories, 3 files (one of them hardlinked twice) and a symlink.
    assert u.inodes == 8 and u.bytes > empty.bytes
    assert u == driver.usage("base") and repr(u) == f"Usage(bytes={u.bytes}, inodes=8)"
    assert isinstance(u, ovl2.Usage)
    with pytest.raises(ovl2.LayerNotFoundError):
        driver.usage("missing")
