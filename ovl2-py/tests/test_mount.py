"""Mounting: get/put, the mounted() context manager, reference counts, strategies, cleanup.

These mount real overlays: they need root and overlayfs, and fail instead of skipping when
CI=true or OVL2_REQUIRE_MOUNT=1.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import pathlib
import stat
from typing import Literal

import pytest

import ovl2
from conftest import mount_points, mounts_under


def build(d: ovl2.Driver) -> None:
    """base (a file) <- app (another file) <- ctr (container layer)."""
    d.create("base")
    (pathlib.Path(d.metadata("base")["UpperDir"]) / "base.txt").write_text("from base")
    d.create("app", "base")
    (pathlib.Path(d.metadata("app")["UpperDir"]) / "app.txt").write_text("from app")
    d.create_rw("ctr", "app")


def test_get_and_put_a_container_layer(mount_driver: ovl2.Driver, home: pathlib.Path) -> None:
    d = mount_driver
    build(d)
    merged = d.get("ctr")
    assert isinstance(merged, str)
    assert merged == str(home / "ctr" / "merged")
    assert merged in mount_points()
    root = pathlib.Path(merged)
    assert (root / "base.txt").read_text() == "from base"
    assert (root / "app.txt").read_text() == "from app"

    # Writes land in the container's diff; deleting a lower file leaves a whiteout there.
    (root / "new.txt").write_text("written")
    (root / "base.txt").unlink()
    assert (home / "ctr" / "diff" / "new.txt").read_text() == "written"
    wh = os.lstat(home / "ctr" / "diff" / "base.txt")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert (home / "base" / "diff" / "base.txt").exists(), "lower layers are never written"

    [m] = d.mounts()
    assert (m.id, m.path, m.count, m.processes, m.persistent, m.readonly, m.mounted) == (
        "ctr", home / "ctr" / "merged", 1, 1, 0, False, True,
    )
    assert m.method
    assert "ctr" in repr(m)

    d.put("ctr")
    assert merged not in mount_points()
    assert not root.exists(), "merged/ is removed with the last put"
    assert d.mounts() == []


def test_get_of_a_base_layer_is_its_diff_without_a_mount(mount_driver: ovl2.Driver, home: pathlib.Path) -> None:
    d = mount_driver
    d.create("base")
    assert d.get("base") == str(home / "base" / "diff")
    assert mounts_under(home) == []
    d.put("base")  # a no-op, as in Docker


def test_committed_layers_mount_read_only(mount_driver: ovl2.Driver) -> None:
    d = mount_driver
    build(d)
    # app has a child (ctr), so it is committed: its mount has no upper.
    with d.mounted("app") as root:
        assert (root / "app.txt").read_text() == "from app"
        with pytest.raises(OSError) as ei:
            (root / "x").write_text("no")
        assert ei.value.errno == errno.EROFS
        assert d.mounts()[0].readonly


def test_readonly_mount_of_a_container_layer(mount_driver: ovl2.Driver) -> None:
    d = mount_driver
    build(d)
    with d.mounted("ctr", readonly=True) as root:
        assert (root / "app.txt").read_text() == "from app"
        with pytest.raises(OSError) as ei:
            (root / "x").write_text("no")
        assert ei.value.errno == errno.EROFS
        # Mounted read-only, it cannot also be mounted read-write.
        with pytest.raises(ovl2.BusyError) as be:
            d.get("ctr")
        assert be.value.errno == errno.EBUSY
        assert "read-only" in str(be.value)


def test_references_are_counted(mount_driver: ovl2.Driver, home: pathlib.Path) -> None:
    d = mount_driver
    build(d)
    first = d.get("ctr")
    assert d.get("ctr") == first
    # The store records one reference per process; this process counts its own gets.
    assert (d.mounts()[0].count, d.mounts()[0].processes) == (1, 1)
    d.put("ctr")
    assert first in mount_points(), "one reference left"
    d.put("ctr")
    assert first not in mount_points()
    with pytest.raises(ovl2.InvalidArgumentError) as ei:
        d.put("ctr")
    assert "not mounted" in str(ei.value)


def test_persistent_references_belong_to_the_store(mount_driver: ovl2.Driver, home: pathlib.Path) -> None:
    d = mount_driver
    build(d)
    d.get("ctr", persistent=True)
    [m] = d.mounts()
    assert (m.persistent, m.processes) == (1, 0)
    # Another Driver (as another process would) sees the mount and can release it.
    with ovl2.Driver(home) as other:
        assert [x.id for x in other.mounts()] == ["ctr"]
        other.put("ctr")
    assert mounts_under(home) == []


def test_mounted_yields_a_path_and_puts_on_exit(mount_driver: ovl2.Driver, home: pathlib.Path) -> None:
    d = mount_driver
    build(d)
    cm = d.mounted("ctr")
    assert "ctr" in repr(cm)
    with cm as root:
        assert isinstance(root, pathlib.Path)
        assert root == home / "ctr" / "merged"
        assert str(root) in mount_points()
        (root / "hello").write_text("hi")
    assert mounts_under(home) == []
    assert (home / "ctr" / "diff" / "hello").read_text() == "hi"


def test_mounted_puts_when_the_body_raises(mount_driver: ovl2.Driver, home: pathlib.Path) -> None:
    d = mount_driver
    build(d)
    with pytest.raises(ZeroDivisionError):
        with d.mounted("ctr") as root:
            assert str(root) in mount_points()
            1 / 0
    assert mounts_under(home) == []
    assert d.mounts() == []


def test_mounted_nests_and_can_be_reused(mount_driver: ovl2.Driver, home: pathlib.Path) -> None:
    d = mount_driver
    build(d)
    cm = d.mounted("ctr")
    with cm as outer:
        with cm as inner:
            assert inner == outer
        assert str(outer) in mount_points()
    assert mounts_under(home) == []
    with cm:
        assert d.mounts()[0].count == 1
    assert mounts_under(home) == []
    with pytest.raises(RuntimeError):
        cm.__exit__(None, None, None)


def test_mounted_on_a_missing_layer_raises_and_mounts_nothing(mount_driver: ovl2.Driver, home: pathlib.Path) -> None:
    with pytest.raises(ovl2.LayerNotFoundError):
        with mount_driver.mounted("missing"):
            pytest.fail("body must not run")
    assert mounts_under(home) == []


def test_a_mounted_layer_cannot_be_removed(mount_driver: ovl2.Driver) -> None:
    d = mount_driver
    build(d)
    with d.mounted("ctr"):
        with pytest.raises(ovl2.BusyError) as ei:
            d.remove("ctr")
        assert "mounted" in str(ei.value)
    d.remove("ctr")
    assert not d.exists("ctr")


def test_cleanup_unmounts_everything(mount_driver: ovl2.Driver, home: pathlib.Path) -> None:
    d = mount_driver
    build(d)
    d.create_rw("ctr2", "app")
    d.get("ctr")
    d.get("ctr")
    d.get("ctr2", persistent=True)
    assert len(mounts_under(home)) == 2
    d.cleanup()
    assert mounts_under(home) == []
    assert d.mounts() == []
    # References are forgotten too: a new get starts from one.
    with d.mounted("ctr"):
        assert d.mounts()[0].count == 1


def test_invalid_mount_arguments(mount_driver: ovl2.Driver) -> None:
    d = mount_driver
    build(d)
    with pytest.raises(ovl2.InvalidArgumentError):
        d.get("ctr", "bad,label")
    with pytest.raises(ovl2.InvalidIdError):
        d.get("../etc")
    with pytest.raises(ovl2.LayerNotFoundError):
        d.get("missing")
    with pytest.raises(ovl2.LayerNotFoundError):
        d.put("missing")


def test_mount_strategy_option(home: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OVL2_MOUNT_STRATEGY", raising=False)
    with ovl2.Driver(home) as d:
        assert d.mount_strategy == "auto"
    strategies: tuple[Literal["auto", "new", "legacy"], ...] = ("auto", "new", "legacy")
    for s in strategies:
        with ovl2.Driver(home, mount_strategy=s) as d:
            assert d.mount_strategy == s
    monkeypatch.setenv("OVL2_MOUNT_STRATEGY", "legacy")
    with ovl2.Driver(home) as d:
        assert d.mount_strategy == "legacy"
    with ovl2.Driver(home, mount_strategy="new") as d:
        assert d.mount_strategy == "new", "the keyword wins over the environment"
    with pytest.raises(ovl2.InvalidArgumentError) as ei:
        ovl2.Driver(home, mount_strategy="fastest")  # type: ignore[arg-type]
    assert "fastest" in str(ei.value)
    monkeypatch.setenv("OVL2_MOUNT_STRATEGY", "bogus")
    with pytest.raises(ovl2.InvalidArgumentError):
        ovl2.Driver(home)


def test_disabled_features(home: pathlib.Path) -> None:
    with pytest.raises(ovl2.InvalidArgumentError) as ei:
        ovl2.Driver(home, disabled_features=["warp-drive"])
    assert "warp-drive" in str(ei.value)
    with ovl2.Driver(home, disabled_features=["lowerdir+fd"]) as d:
        assert "lowerdir+fd" not in d.features()
        assert set(d.features()) <= {"fsopen", "lowerdir+", "lowerdir+fd", "O_PATH-fds", "index-param", "userxattr"}


@pytest.mark.parametrize("strategy", ["new", "legacy"])
def test_every_strategy_mounts_a_deep_chain(home: pathlib.Path, strategy: Literal["new", "legacy"]) -> None:
    from conftest import need_mounts

    need_mounts()
    with ovl2.Driver(home, sync=False, mount_strategy=strategy) as d:
        if strategy == "new" and "fsopen" not in d.features():
            pytest.skip("this kernel has no new mount API")
        parent = None
        for i in range(1, 129):
            d.create(f"L{i}", parent)
            (home / f"L{i}" / "diff" / f"f{i}").write_text(str(i))
            parent = f"L{i}"
        d.create_rw("top", parent)
        with d.mounted("top") as root:
            assert sorted(int(p.name[1:]) for p in root.iterdir()) == list(range(1, 129))
            assert (root / "f1").read_text() == "1"
            [m] = d.mounts()
            assert m.method.startswith(strategy), m.method
        assert mounts_under(home) == []


def test_references_of_a_killed_process_are_dropped(mount_driver: ovl2.Driver, home: pathlib.Path) -> None:
    # A harness process that dies holding a mount must not keep it forever: the next call
    # that looks at the layer forgets dead holders and unmounts what nobody holds.
    import signal
    import subprocess
    import sys

    d = mount_driver
    build(d)
    child = subprocess.Popen(
        # The child keeps its Driver: closing (or dropping) one gives its references back.
        [sys.executable, "-c", f"import ovl2, sys, time; d = ovl2.Driver({str(home)!r}); d.get('ctr'); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        d.get("ctr")
        [m] = d.mounts()
        assert (m.count, m.processes) == (2, 2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    [m] = d.mounts()
    assert (m.count, m.processes) == (1, 1), "the dead process's reference is gone"
    d.put("ctr")
    assert mounts_under(home) == []


def test_closing_a_driver_gives_back_its_references(mount_driver: ovl2.Driver, home: pathlib.Path) -> None:
    d = mount_driver
    build(d)
    other = ovl2.Driver(str(home))
    other.get("ctr")
    other.get("ctr")  # answered from memory: the store sees one process reference
    assert [(m.id, m.processes) for m in d.mounts()] == [("ctr", 1)]
    other.close()
    assert d.mounts() == []
    assert mounts_under(home) == []


def test_a_forked_child_keeps_its_mount(mount_driver: ovl2.Driver, home: pathlib.Path) -> None:
    """Issue 10, item 5a: multiprocessing forks by default. A child's get was recorded with
    its parent's start time, so the next open by any other process took its mount down and
    the child's put failed."""
    d = mount_driver
    build(d)
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()

    def child() -> None:
        try:
            merged = d.get("ctr")
            child_end.send(merged)
            if not child_end.poll(30):  # another process opens the store meanwhile
                raise TimeoutError("the parent never answered")
            child_end.recv()
            alive = (pathlib.Path(merged) / "base.txt").read_text() == "from base"
            d.put("ctr")
            child_end.send("ok" if alive else "the mount was taken down under the child")
        except Exception as e:  # reported to the parent, which asserts
            child_end.send(f"{type(e).__name__}: {e}")

    # A daemon, so a failed assertion here cannot leave pytest waiting for it at exit.
    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    try:
        assert parent_end.poll(30), "the child never got ctr"
        merged = parent_end.recv()
        with ovl2.Driver(home) as other:  # a second process's view: open reconciles every record
            ms = other.mounts()
            assert [(m.id, m.processes, m.mounted) for m in ms] == [("ctr", 1, True)], "the child's mount was reaped"
        parent_end.send("go on")
        assert parent_end.poll(30), "the child never finished"
        assert parent_end.recv() == "ok"
        proc.join(30)
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert merged not in mount_points()
    assert d.mounts() == []


def test_a_forked_childs_put_leaves_the_parents_reference(mount_driver: ovl2.Driver) -> None:
    """Issue 13: a forked child is told by a fork generation (a pthread_atfork child handler,
    here linked into the wheel) instead of getpid. The child holds nothing, so its put of a
    layer only the parent holds is refused and the parent's mount stays."""
    d = mount_driver
    build(d)
    merged = d.get("ctr")
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child reports through its exit code)
        code = 1
        try:
            d.put("ctr")
            code = 3  # the child spent the parent's reference
        except ovl2.InvalidArgumentError:
            code = 0 if merged in mount_points() else 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child's put was taken as the parent's"
    assert merged in mount_points()
    assert [(m.id, m.processes) for m in d.mounts()] == [("ctr", 1)]
    d.put("ctr")
    assert merged not in mount_points()
