"""Exceptions: the hierarchy, and each class raised by a real failure with its errno."""

from __future__ import annotations

import errno
import io
import os
import pathlib
import sys
from typing import Any, Callable

import pytest

import ovl2
from conftest import id_mapped, rust_debug_text
from tarballs import layer_tar

CLASSES: dict[type[ovl2.Error], int] = {
    ovl2.InvalidArgumentError: errno.EINVAL,
    ovl2.InvalidIdError: errno.EINVAL,
    ovl2.LayerNotFoundError: errno.ENOENT,
    ovl2.LayerExistsError: errno.EEXIST,
    ovl2.MaxDepthError: errno.ETOOMANYREFS,
    ovl2.BusyError: errno.EBUSY,
    ovl2.UnsupportedError: errno.EOPNOTSUPP,
    ovl2.PermissionDeniedError: errno.EACCES,
    ovl2.CorruptStoreError: errno.EUCLEAN,
    ovl2.CorruptArchiveError: errno.EBADMSG,
}


@pytest.mark.parametrize("cls", [ovl2.Error, *CLASSES])
def test_every_class_is_an_oserror_and_documented(cls: type) -> None:
    assert issubclass(cls, ovl2.Error)
    assert issubclass(cls, OSError)
    assert cls.__module__ == "ovl2._errors"
    assert cls.__doc__ and len(cls.__doc__) > 20
    assert getattr(ovl2, cls.__name__) is cls


def test_value_errors_and_permission_errors() -> None:
    assert issubclass(ovl2.InvalidIdError, ValueError)
    assert issubclass(ovl2.InvalidIdError, ovl2.InvalidArgumentError)
    assert issubclass(ovl2.InvalidArgumentError, ValueError)
    assert issubclass(ovl2.PermissionDeniedError, PermissionError)
    for cls in (ovl2.LayerNotFoundError, ovl2.BusyError, ovl2.CorruptArchiveError):
        assert not issubclass(cls, ValueError)


def check(exc: OSError, cls: type[ovl2.Error], message_part: str) -> None:
    assert type(exc) is cls, f"{type(exc).__name__}: {exc}"
    assert exc.errno == CLASSES[cls]
    assert exc.strerror is not None and message_part in exc.strerror
    assert str(exc) == f"[Errno {exc.errno}] {exc.strerror}"


@pytest.mark.parametrize("bad", ["", "a/b", ".hidden", "..", "l", "x" * 256, "nul\0byte"])
def test_invalid_id(driver: ovl2.Driver, bad: str) -> None:
    with pytest.raises(ovl2.InvalidIdError) as ei:
        driver.create(bad)
    check(ei.value, ovl2.InvalidIdError, "invalid layer id")
    # Caught as a ValueError too, the way Python code checks arguments.
    with pytest.raises(ValueError):
        driver.exists(bad)


def test_invalid_argument(home: pathlib.Path, driver: ovl2.Driver) -> None:
    for depth in (0, 501):
        with pytest.raises(ovl2.InvalidArgumentError) as ei:
            ovl2.Driver(home, max_depth=depth)
        check(ei.value, ovl2.InvalidArgumentError, "max_depth")
    with pytest.raises(ovl2.InvalidArgumentError) as ei:
        driver.create("a", storage_opt={"colour": "blue"})
    check(ei.value, ovl2.InvalidArgumentError, "colour")
    with pytest.raises(ovl2.InvalidArgumentError):
        driver.create("a", "a")
    assert not driver.exists("a")


def test_negative_max_depth_is_a_python_overflow(home: pathlib.Path) -> None:
    with pytest.raises(OverflowError):
        ovl2.Driver(home, max_depth=-1)


def test_layer_not_found(driver: ovl2.Driver) -> None:
    for call in (
        lambda: driver.create("child", "missing"),
        lambda: driver.remove("missing"),
        lambda: driver.parent("missing"),
        lambda: driver.metadata("missing"),
    ):
        with pytest.raises(ovl2.LayerNotFoundError) as ei:
            call()
        check(ei.value, ovl2.LayerNotFoundError, '"missing"')
    assert driver.layers() == []


def test_a_file_missing_inside_a_layer_is_not_layer_not_found(driver: ovl2.Driver, home: pathlib.Path) -> None:
    # The layer exists; only its diff/ is gone. LayerNotFoundError would tell the caller the
    # id is wrong (it was raised before), so this is a plain Error that keeps ENOENT and the path.
    driver.create("base")
    (home / "base" / "diff").rmdir()
    for call in (
        lambda: driver.diff("base", io.BytesIO()),
        lambda: driver.diff_size("base"),
        lambda: driver.changes("base"),
    ):
        with pytest.raises(ovl2.Error) as ei:
            call()
        assert type(ei.value) is ovl2.Error, f"{type(ei.value).__name__}: {ei.value}"
        assert not isinstance(ei.value, FileNotFoundError)
        assert ei.value.errno == errno.ENOENT
        assert ei.value.strerror is not None and "base/diff" in ei.value.strerror


def test_layer_exists(driver: ovl2.Driver) -> None:
    driver.create("a")
    with pytest.raises(ovl2.LayerExistsError) as ei:
        driver.create_rw("a")
    check(ei.value, ovl2.LayerExistsError, '"a" already exists')


def test_max_depth(home: pathlib.Path) -> None:
    with ovl2.Driver(home, max_depth=2) as d:
        # Docker's rule: a layer may have max_depth lower layers ("3" has 2), not more.
        d.create("1")
        d.create("2", "1")
        d.create("3", "2")
        with pytest.raises(ovl2.MaxDepthError) as ei:
            d.create("4", "3")
        check(ei.value, ovl2.MaxDepthError, "would have 3 lower layers, the limit is 2")
        assert not d.exists("4")


def test_busy(driver: ovl2.Driver) -> None:
    driver.create("base")
    driver.create("child", "base")
    with pytest.raises(ovl2.BusyError) as ei:
        driver.remove("base")
    check(ei.value, ovl2.BusyError, "child")
    assert driver.exists("base")


def test_unsupported(driver: ovl2.Driver) -> None:
    with pytest.raises(ovl2.UnsupportedError) as ei:
        driver.create("a", storage_opt={"size": "10G"})
    check(ei.value, ovl2.UnsupportedError, "size")


def test_corrupt_store(driver: ovl2.Driver, home: pathlib.Path) -> None:
    driver.create("base")
    driver.create("child", "base")
    (home / "child" / "lower").write_text("not a lower file")
    with pytest.raises(ovl2.CorruptStoreError) as ei:
        driver.parent("child")
    check(ei.value, ovl2.CorruptStoreError, "child")


def test_plain_io_failure_is_the_base_error(tmp_path: pathlib.Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ovl2.Error) as ei:
        ovl2.Driver(tmp_path / "file" / "store")
    assert type(ei.value) is ovl2.Error
    assert ei.value.errno == errno.ENOTDIR
    assert "store" in str(ei.value)


def test_permission_denied(tmp_path: pathlib.Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    home = locked / "store"
    if os.geteuid() != 0:
        os.chmod(locked, 0o500)
        with pytest.raises(ovl2.PermissionDeniedError) as ei:
            ovl2.Driver(home)
        check(ei.value, ovl2.PermissionDeniedError, "store")
        assert isinstance(ei.value, PermissionError)
        return
    # Root passes permission checks; try again from a forked child that dropped to nobody.
    if not id_mapped(65534):
        pytest.skip("uid 65534 does not exist in this user namespace")
    os.chmod(tmp_path, 0o755)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            try:
                ovl2.Driver(home)
                out = "no error"
            except Exception as e:
                out = f"{type(e).__name__}|{getattr(e, 'errno', None)}|{isinstance(e, PermissionError)}"
            os.write(w, out.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        result = f.read()
    os.waitpid(pid, 0)
    assert result == f"PermissionDeniedError|{errno.EACCES}|True"
    assert not home.exists()


def test_failed_calls_leave_no_pending_exception(driver: ovl2.Driver) -> None:
    # A failed call must leave no pending exception behind for the next one.
    for _ in range(100):
        with pytest.raises(ovl2.LayerNotFoundError):
            driver.parent("missing")
    driver.create("ok")
    assert driver.exists("ok")
    assert sys.exc_info() == (None, None, None)


def test_messages_carry_no_rust_debug_text(driver: ovl2.Driver, home: pathlib.Path) -> None:
    # Issue 11: apply_diff's parent check once said `None is not the parent ... Some("b")`.
    driver.create("b")
    driver.create("u", "b")
    good = layer_tar({"x": "y"})
    untyped: Any = driver
    calls: list[Callable[[], object]] = [
        lambda: driver.apply_diff("u", good, "ghost"),
        lambda: driver.apply_diff("missing", good),
        lambda: driver.apply_diff("u", layer_tar({"../x": "y"})),
        lambda: driver.apply_diff("u", good[:700]),
        lambda: driver.apply_diff("u", good, expect_digest="sha256:" + "0" * 64),
        lambda: driver.create("u"),
        lambda: driver.create("x", "missing"),
        lambda: driver.create("x", storage_opt={"colour": "blue"}),
        lambda: driver.create("x", storage_opt={"size": "1G"}),
        lambda: driver.remove("b"),
        lambda: driver.parent("missing"),
        lambda: driver.metadata("missing"),
        lambda: driver.diff("missing", io.BytesIO()),
        lambda: driver.changes("u", "missing"),
        lambda: driver.diff_size("missing"),
        lambda: driver.put("u"),
        lambda: driver.get("u", 'bad"label'),
        lambda: driver.create_container("c", "missing"),
        lambda: untyped.create_container("c", "b", init_entries=[("bogus", "x")]),
        lambda: ovl2.Driver(home, max_depth=0),
    ]
    messages = []
    for call in calls:
        with pytest.raises((ovl2.Error, ValueError)) as ei:
            call()
        messages.append(str(ei.value))
    assert [m for m in messages if rust_debug_text(m)] == []
    assert not driver.exists("x") and not driver.exists("c")


def test_a_home_that_is_not_a_directory_says_so() -> None:
    # It raised LayerExistsError (EEXIST from creating the home) before.
    with pytest.raises(ovl2.Error) as ei:
        ovl2.Driver("/dev/null")
    assert not isinstance(ei.value, ovl2.LayerExistsError)
    assert ei.value.errno == errno.ENOTDIR
    assert "/dev/null is not a directory" in str(ei.value)


def test_a_directory_that_is_not_a_store_is_refused_untouched() -> None:
    before = os.stat("/proc/self")
    with pytest.raises(ovl2.InvalidArgumentError) as ei:
        ovl2.Driver("/proc/self")
    assert "/proc/self is not an ovl2/overlay2 store" in str(ei.value)
    after = os.stat("/proc/self")
    assert (before.st_mode, before.st_uid, before.st_gid) == (after.st_mode, after.st_uid, after.st_gid)


def test_a_nul_in_a_path_is_a_value_error_as_in_os(home: pathlib.Path, driver: ovl2.Driver) -> None:
    # It was OSError with the message where the errno goes ("[Errno file name contained ...]").
    with pytest.raises(ValueError, match="embedded null byte"):
        os.stat("a\0b")
    with pytest.raises(ValueError, match="embedded null byte"):
        ovl2.Driver(str(home) + "\0x")
    driver.create("base")
    with pytest.raises(ValueError, match="embedded null byte"):
        driver.apply_diff("base", str(home / "x\0.tar"))
    with pytest.raises(ValueError, match="embedded null byte"):
        driver.diff("base", str(home / "out\0.tar"))


def test_classes_fit_where_os_puts_the_same_errno() -> None:
    # Code written against `os` catches ovl2's errors the same way.
    assert issubclass(ovl2.LayerNotFoundError, FileNotFoundError)
    assert issubclass(ovl2.LayerExistsError, FileExistsError)
    # os raises a plain OSError for EBUSY; BlockingIOError is EAGAIN's class.
    assert issubclass(ovl2.BusyError, OSError)
    assert not issubclass(ovl2.BusyError, BlockingIOError)
    for cls in (ovl2.LayerNotFoundError, ovl2.LayerExistsError, ovl2.BusyError):
        assert issubclass(cls, ovl2.Error)
    assert not issubclass(ovl2.LayerNotFoundError, FileExistsError)
    assert not issubclass(ovl2.LayerExistsError, FileNotFoundError)


def test_except_the_standard_classes(driver: ovl2.Driver) -> None:
    try:
        driver.parent("missing")
    except FileNotFoundError as e:
        assert isinstance(e, ovl2.LayerNotFoundError)
        assert e.errno == errno.ENOENT
    else:
        pytest.fail("parent() of a missing layer raised nothing")
    driver.create("base")
    try:
        driver.create("base")
    except FileExistsError as e:
        assert isinstance(e, ovl2.LayerExistsError)
        assert e.errno == errno.EEXIST
    else:
        pytest.fail("creating an existing layer raised nothing")
    driver.create("child", "base")
    try:
        driver.remove("base")
    except OSError as e:
        assert isinstance(e, ovl2.BusyError)
        assert e.errno == errno.EBUSY
    else:
        pytest.fail("removing a layer with a child raised nothing")
    assert driver.exists("base")
