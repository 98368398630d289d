"""Threads: one Driver shared by many threads, and the GIL released while the store works."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import ovl2

THREADS = 8


def test_threads_create_query_and_remove_on_one_driver(driver: ovl2.Driver) -> None:
    def chain(t: int) -> list[str]:
        ids = [f"t{t}-{i}" for i in range(6)]
        parent = None
        for id in ids:
            driver.create(id, parent)
            parent = id
        for i, id in enumerate(ids):
            assert driver.exists(id)
            assert driver.parent(id) == (ids[i - 1] if i else None)
            assert driver.metadata(id)["UpperDir"].endswith(f"/{id}/diff")
        # Remove every other chain again, leaves first.
        if t % 2:
            for id in reversed(ids):
                driver.remove(id)
            return []
        return ids

    with ThreadPoolExecutor(THREADS) as pool:
        kept = [id for ids in pool.map(chain, range(THREADS)) for id in ids]

    layers = driver.layers()
    assert sorted(l.id for l in layers) == sorted(kept)
    assert {l.id: l.depth for l in layers} == {id: int(id.split("-")[1]) for id in kept}
    assert driver.check() == []


def test_threads_race_for_the_same_ids(driver: ovl2.Driver) -> None:
    # Every thread tries to create the same ten layers: each must be created exactly once,
    # every other attempt must fail with LayerExistsError, nothing else.
    barrier = threading.Barrier(THREADS)

    def attempt(_: int) -> tuple[int, int]:
        barrier.wait()
        made = lost = 0
        for i in range(10):
            try:
                driver.create(f"shared-{i}")
                made += 1
            except ovl2.LayerExistsError:
                lost += 1
        return made, lost

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(attempt, range(THREADS)))
    assert sum(m for m, _ in results) == 10
    assert sum(l for _, l in results) == 10 * (THREADS - 1)
    assert len(driver.layers()) == 10
    assert driver.check() == []


def test_threads_with_their_own_drivers_on_one_store(home: pathlib.Path) -> None:
    with ovl2.Driver(home) as d:
        d.create("base")

    def work(t: int) -> None:
        with ovl2.Driver(home) as mine:
            for i in range(5):
                mine.create_rw(f"c{t}-{i}", "base")
            assert mine.check() == []

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    with ovl2.Driver(home) as d:
        assert len(d.layers()) == 1 + 4 * 5
        assert all(l.parent == "base" for l in d.layers() if l.id != "base")


def test_close_while_other_threads_work(home: pathlib.Path) -> None:
    # close() must not pull the store out from under a running call: calls either finish
    # or raise ValueError (closed), never anything else.
    d = ovl2.Driver(home)
    d.create("base")
    errors: list[BaseException] = []
    started = threading.Barrier(5)

    def work(t: int) -> None:
        started.wait()
        for i in range(200):
            try:
                d.create_rw(f"w{t}-{i}", "base")
            except ValueError as e:
                assert "closed" in str(e)
                return
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
                return

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    started.wait()
    d.close()
    for t in threads:
        t.join()
    assert errors == []
    with ovl2.Driver(home) as again:
        assert again.check() == []


def test_calls_release_the_gil(home: pathlib.Path) -> None:
    # A thread blocks inside create() on the store lock, which this process holds through a
    # separate descriptor. The main thread must keep running Python meanwhile and release the
    # lock; if create() held the GIL, the child process would hang and hit the timeout.
    with ovl2.Driver(home) as d:
        d.create("base")
    script = textwrap.dedent(
        f"""
        import fcntl, os, threading, time
        import ovl2
        home = {str(home)!r}
        d = ovl2.Driver(home)
        lock = os.open(os.path.join(home, ".ovl2", "lock"), os.O_RDWR)
        fcntl.flock(lock, fcntl.LOCK_EX)
        t = threading.Thread(target=d.create, args=("blocked", "base"))
        t.start()
        ticks = 0
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            ticks += 1
            time.sleep(0.01)
        assert t.is_alive(), "create() did not wait for the store lock"
        assert not d.exists("blocked")
        fcntl.flock(lock, fcntl.LOCK_UN)
        t.join(10)
        assert not t.is_alive()
        assert d.exists("blocked")
        print("ticks", ticks)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ticks = int(out.stdout.split()[1])
    assert ticks > 10, out.stdout


def test_threads_get_and_put_one_layer(home: pathlib.Path) -> None:
    # Every thread repeatedly takes and drops a reference to the same container layer; while
    # a thread holds one, the mount must be there, and after the last put nothing is left.
    from conftest import mounts_under, need_mounts

    need_mounts()
    with ovl2.Driver(home, sync=False) as d:
        d.create("base")
        (home / "base" / "diff" / "f").write_text("lower")
        d.create_rw("ctr", "base")
        barrier = threading.Barrier(THREADS)

        def churn(_: int) -> int:
            barrier.wait()
            seen = 0
            for _ in range(40):
                merged = pathlib.Path(d.get("ctr"))
                try:
                    seen += (merged / "f").read_text() == "lower"
                finally:
                    d.put("ctr")
            return seen

        with ThreadPoolExecutor(THREADS) as pool:
            assert list(pool.map(churn, range(THREADS))) == [40] * THREADS
        assert mounts_under(home) == []
        assert d.mounts() == []


def test_threads_mount_their_own_containers_in_parallel(home: pathlib.Path) -> None:
    from conftest import mounts_under, need_mounts

    need_mounts()
    with ovl2.Driver(home, sync=False) as d:
        d.create("base")
        (home / "base" / "diff" / "shared").write_text("image")
        d.create("app", "base")

        def container(t: int) -> str:
            id = f"ctr{t}"
            d.create_rw(id, "app")
            for round in range(5):
                with d.mounted(id) as root:
                    assert (root / "shared").read_text() == "image"
                    (root / f"round{round}").write_text(id)
            return id

        with ThreadPoolExecutor(THREADS) as pool:
            ids = list(pool.map(container, range(THREADS)))
        assert mounts_under(home) == []
        for id in ids:
            assert sorted(p.name for p in (home / id / "diff").iterdir()) == [f"round{r}" for r in range(5)]
            d.remove(id)
        assert d.check() == []


def test_mounting_releases_the_gil(home: pathlib.Path) -> None:
    # get() waits on the layer's lock, held here by another descriptor; Python threads must
    # keep running meanwhile (else the subprocess hangs and times out).
    from conftest import need_mounts

    need_mounts()
    with ovl2.Driver(home) as d:
        d.create("base")
        d.create_rw("ctr", "base")
    script = textwrap.dedent(
        f"""
        import fcntl, os, threading, time
        import ovl2
        home = {str(home)!r}
        d = ovl2.Driver(home)
        layer = os.open(os.path.join(home, "ctr"), os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(layer, fcntl.LOCK_EX)
        t = threading.Thread(target=d.get, args=("ctr",))
        t.start()
        ticks = 0
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            ticks += 1
            time.sleep(0.01)
        assert t.is_alive(), "get() did not wait for the layer lock"
        fcntl.flock(layer, fcntl.LOCK_UN)
        t.join(10)
        assert not t.is_alive()
        assert [m.id for m in d.mounts()] == ["ctr"]
        d.put("ctr")
        assert d.mounts() == []
        print("ticks", ticks)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[1]) > 10, out.stdout


def test_threads_apply_layers_in_parallel(driver: ovl2.Driver) -> None:
    # Each thread builds its own three-layer chain from tarballs, from bytes and from file
    # objects, then exports and checks it; all against one Driver.
    import hashlib
    import io

    from tarballs import layer_tar

    def chain(t: int) -> list[str]:
        digests = []
        parent = None
        for i in range(3):
            id = f"t{t}-l{i}"
            tar = layer_tar({f"dir{i}": ("dir", ""), f"dir{i}/file": f"thread {t} layer {i}\n" * 500})
            driver.create(id, parent)
            source = tar if i % 2 else io.BytesIO(tar)
            st = driver.apply_diff(id, source, parent)
            assert st.digest == "sha256:" + hashlib.sha256(tar).hexdigest()
            assert driver.diff_size(id, parent) == st.size
            assert [c.path for c in driver.changes(id, parent)] == [f"/dir{i}", f"/dir{i}/file"]
            exported = driver.diff(id, io.BytesIO(), parent).digest
            assert exported is not None
            digests.append(exported)
            parent = id
        return digests

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(chain, range(THREADS)))
    assert all(len(set(d)) == 3 for d in results)
    assert len(driver.layers()) == 3 * THREADS
    assert driver.check() == []


def test_apply_from_a_pipe_releases_the_gil(home: pathlib.Path) -> None:
    # apply_diff blocks reading a pipe that only this process's main thread fills. Were the
    # GIL held while reading, the writer could never run: the subprocess would hang.
    with ovl2.Driver(home) as d:
        d.create("base")
    script = textwrap.dedent(
        f"""
        import os, threading, sys
        sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
        import ovl2
        from tarballs import layer_tar
        tar = layer_tar({{"big": b"x" * (4 << 20)}})
        d = ovl2.Driver({str(home)!r})
        r, w = os.pipe()
        result = []
        t = threading.Thread(target=lambda: result.append(d.apply_diff("base", r)))
        t.start()
        view = memoryview(tar)
        while view:
            n = os.write(w, view[:65536])
            view = view[n:]
        os.close(w)
        t.join(30)
        assert not t.is_alive() and result, "apply did not finish"
        os.close(r)
        print(result[0].tar_bytes == len(tar), result[0].files)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "1"]
