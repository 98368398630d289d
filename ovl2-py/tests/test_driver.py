"""Driver: opening, closing, and every store operation, checked against the files on disk."""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import stat
from typing import Any

import pytest

import ovl2
from conftest import id_mapped


def test_open_creates_the_docker_layout(home: pathlib.Path) -> None:
    with ovl2.Driver(str(home)) as d:
        assert d.home == home
        assert isinstance(d.home, pathlib.Path)
        assert (home / "l").is_dir()
        assert stat.S_IMODE((home / "l").stat().st_mode) == 0o700
        assert d.max_depth == 500
        assert d.sync is True
        assert d.layers() == []


def test_open_accepts_pathlike_and_options(home: pathlib.Path) -> None:
    with ovl2.Driver(home, sync=False, max_depth=ovl2.DOCKER_MAX_DEPTH, repair_on_open=False) as d:
        assert d.sync is False
        assert d.max_depth == 128


def test_open_cleans_the_home_path(tmp_path: pathlib.Path) -> None:
    with ovl2.Driver(str(tmp_path) + "//store/./") as d:
        assert d.home == tmp_path / "store"


def test_options_are_keyword_only(home: pathlib.Path) -> None:
    untyped: Any = ovl2.Driver  # the call below is wrong on purpose
    with pytest.raises(TypeError):
        untyped(home, False)


def test_root_option_owns_the_layer_dirs(home: pathlib.Path) -> None:
    if os.geteuid() != 0 or not id_mapped(5678) or not id_mapped(1234):
        pytest.skip("chown to another owner needs root and mapped ids")
    with ovl2.Driver(home, root=(1234, 5678)) as d:
        d.create("base")
        st = (home / "base" / "diff").stat()
        assert (st.st_uid, st.st_gid) == (1234, 5678)


def test_context_manager_closes(home: pathlib.Path) -> None:
    with ovl2.Driver(home) as d:
        assert not d.closed
        assert "closed" not in repr(d)
    assert d.closed
    assert "closed" in repr(d)
    with pytest.raises(ValueError, match="closed"):
        d.exists("x")


def test_context_manager_closes_when_the_body_raises(home: pathlib.Path) -> None:
    with pytest.raises(KeyError):
        with ovl2.Driver(home) as d:
            raise KeyError("boom")
    assert d.closed


def test_close_is_idempotent_and_the_store_reopens(home: pathlib.Path) -> None:
    d = ovl2.Driver(home)
    d.create("a")
    d.close()
    d.close()
    with ovl2.Driver(home) as again:
        assert again.exists("a")


def test_create_and_query_a_chain(driver: ovl2.Driver, home: pathlib.Path) -> None:
    driver.create("base")
    driver.create("mid", "base")
    driver.create_rw("ctr", parent="mid")

    for id in ("base", "mid", "ctr"):
        assert driver.exists(id)
        assert (home / id / "diff").is_dir()
    assert not driver.exists("nope")

    assert driver.parent("base") is None
    assert driver.parent("mid") == "base"
    assert driver.parent("ctr") == "mid"
    # A layer that others build on is marked committed, as Docker does.
    assert (home / "base" / "committed").exists()
    assert (home / "mid" / "committed").exists()
    assert not (home / "ctr" / "committed").exists()

    lower = (home / "ctr" / "lower").read_text()
    links = [os.readlink(home / "l" / (home / i / "link").read_text()) for i in ("mid", "base")]
    assert links == ["../mid/diff", "../base/diff"]
    assert lower == ":".join("l/" + (home / i / "link").read_text() for i in ("mid", "base"))


def test_create_accepts_an_empty_storage_opt_and_a_mount_label(driver: ovl2.Driver) -> None:
    driver.create("a", storage_opt={}, mount_label="system_u:object_r:container_file_t:s0")
    driver.create_rw("b", "a", storage_opt={}, mount_label=None)
    assert driver.parent("b") == "a"


def test_metadata_is_dockers_map(driver: ovl2.Driver, home: pathlib.Path) -> None:
    driver.create("base")
    driver.create("child", "base")
    assert driver.metadata("base") == {
        "UpperDir": str(home / "base" / "diff"),
        "WorkDir": str(home / "base" / "work"),
        "MergedDir": str(home / "base" / "merged"),
    }
    md = driver.metadata("child")
    assert isinstance(md, dict)
    assert md["LowerDir"] == str(home / "base" / "diff")
    assert md["UpperDir"] == str(home / "child" / "diff")


def test_status_is_an_ordered_dict_with_dockers_keys_first(driver: ovl2.Driver) -> None:
    driver.create("a")
    st = driver.status()
    assert isinstance(st, dict)
    assert list(st)[:2] == ["Backing Filesystem", "Supports d_type"]
    assert st["Supports d_type"] in ("true", "false")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in st.items())


def test_layers_reports_parent_and_depth(driver: ovl2.Driver, home: pathlib.Path) -> None:
    driver.create("b")
    driver.create("c", "b")
    driver.create("a", "c")
    layers = driver.layers()
    assert [(l.id, l.parent, l.depth) for l in layers] == [("a", "c", 2), ("b", None, 0), ("c", "b", 1)]
    a = layers[0]
    assert a.short_id == (home / "a" / "link").read_text()
    assert repr(a) == "Layer(id='a', parent='c', depth=2)"
    assert a == driver.layers()[0]
    assert len({*layers, *driver.layers()}) == 3
    with pytest.raises(AttributeError):
        a.depth = 7  # type: ignore[misc]


def test_remove(driver: ovl2.Driver, home: pathlib.Path) -> None:
    driver.create("base")
    driver.create("child", "base")
    link = (home / "child" / "link").read_text()
    driver.remove("child")
    assert not driver.exists("child")
    assert not (home / "child").exists()
    assert not os.path.lexists(home / "l" / link)
    driver.remove("base", force=False)
    assert driver.layers() == []


def test_remove_never_orphans_children_even_with_force(driver: ovl2.Driver) -> None:
    driver.create("base")
    driver.create("child", "base")
    for force in (False, True):
        with pytest.raises(ovl2.BusyError, match="ovl2 rm --recursive base"):
            driver.remove("base", force=force)
    assert driver.exists("base") and driver.exists("child")
    assert driver.check() == []


def test_remove_tree_removes_descendants_deepest_first(driver: ovl2.Driver, home: pathlib.Path) -> None:
    driver.create("base")
    driver.create("mid", "base")
    driver.create("top", "mid")
    driver.create("side", "base")
    driver.create("other")
    assert driver.remove_tree("base") == ["top", "mid", "side", "base"]
    assert [l.id for l in driver.layers()] == ["other"]
    assert driver.check() == []
    with pytest.raises(ovl2.LayerNotFoundError):
        driver.remove_tree("base")


def test_orphans_are_flagged_and_explained(driver: ovl2.Driver, home: pathlib.Path) -> None:
    driver.create("p")
    driver.create("ch", "p")
    # Another tool removes p, as Docker's Remove does.
    lid = (home / "p" / "link").read_text()
    shutil.rmtree(home / "p")
    (home / "l" / lid).unlink()
    (ch,) = driver.layers()
    assert (ch.id, ch.parent, ch.depth, ch.orphan) == ("ch", None, 1, True)
    (p,) = driver.check()
    assert (p.layer, p.kind, p.repairable) == ("ch", "orphan", False)
    assert p.detail == f"parent short id {lid} is gone; `ovl2 rm --recursive ch` removes it and the layers built on it"
    assert driver.remove_tree("ch") == ["ch"]
    assert driver.check() == []


def test_repair_gives_a_lost_short_id_back(driver: ovl2.Driver, home: pathlib.Path) -> None:
    driver.create("base")
    driver.create("mid", "base")
    driver.create("top", "mid")
    lid = (home / "mid" / "link").read_text()
    for link in (home / "l").iterdir():
        link.unlink()
    (home / "mid" / "link").unlink()
    assert all(p.repairable for p in driver.check())
    assert driver.check(repair=True) and driver.check() == []
    assert (home / "mid" / "link").read_text() == lid
    assert driver.parent("top") == "mid"
    assert driver.metadata("top")["LowerDir"] == f"{home}/mid/diff:{home}/base/diff"


def test_check_clean_store_finds_nothing(driver: ovl2.Driver) -> None:
    driver.create("a")
    driver.create("b", "a")
    assert driver.check() == []
    assert driver.check(repair=True) == []


def test_check_finds_and_repair_fixes(driver: ovl2.Driver, home: pathlib.Path) -> None:
    driver.create("a")
    link = (home / "a" / "link").read_text()
    os.unlink(home / "l" / link)

    found = driver.check()
    assert [(p.layer, p.kind, p.repairable, p.repaired) for p in found] == [("a", "missing_short_link", True, False)]
    assert link in found[0].detail
    assert "missing_short_link" in repr(found[0])
    assert not os.path.lexists(home / "l" / link), "check() must not change anything"

    fixed = driver.check(repair=True)
    assert [(p.layer, p.kind, p.repaired) for p in fixed] == [("a", "missing_short_link", True)]
    assert os.readlink(home / "l" / link) == "../a/diff"
    assert driver.check() == []


def test_check_repair_reports_what_remains(driver: ovl2.Driver, home: pathlib.Path) -> None:
    driver.create("a")
    os.rmdir(home / "a" / "diff")
    remaining = driver.check(repair=True)
    assert [(p.layer, p.kind, p.repairable, p.repaired) for p in remaining] == [("a", "missing_diff", False, False)]


def test_repair_on_open(home: pathlib.Path) -> None:
    with ovl2.Driver(home) as d:
        d.create("a")
    link = (home / "a" / "link").read_text()
    os.unlink(home / "l" / link)
    with ovl2.Driver(home, repair_on_open=False) as d:
        assert [p.kind for p in d.check()] == ["missing_short_link"]
    with ovl2.Driver(home) as d:
        assert d.check() == []
    assert os.readlink(home / "l" / link) == "../a/diff"


def test_a_store_written_here_is_read_by_a_second_driver(home: pathlib.Path) -> None:
    with ovl2.Driver(home) as one, ovl2.Driver(home) as two:
        one.create("a")
        two.create("b", "a")
        assert one.parent("b") == "a"
        assert [l.id for l in one.layers()] == [l.id for l in two.layers()] == ["a", "b"]


def test_open_modes(home: pathlib.Path) -> None:
    for mode in ("existing", "read_only"):
        with pytest.raises(ovl2.LayerNotFoundError) as ei:
            ovl2.Driver(home, open_mode=mode)
        assert ei.value.errno == errno.ENOENT
        assert "does not exist" in str(ei.value)
        assert not home.exists()
    with ovl2.Driver(home, open_mode="create") as d:
        d.create("base")
        d.create("app", "base")
    os.remove(home / ".ovl2" / "lock")
    before = sorted((str(p), p.lstat().st_mode) for p in home.rglob("*"))
    with ovl2.Driver(home, open_mode="read_only") as d:
        assert [layer.id for layer in d.layers()] == ["app", "base"]
        assert d.check() == []
        for call in (lambda: d.create("x"), lambda: d.remove("app"), lambda: d.check(repair=True)):
            with pytest.raises(ovl2.PermissionDeniedError) as refused:
                call()
            assert refused.value.errno == errno.EROFS
            assert "opened read-only" in str(refused.value)
    assert sorted((str(p), p.lstat().st_mode) for p in home.rglob("*")) == before
    with ovl2.Driver(home, open_mode="existing") as d:
        d.create("x")
    with pytest.raises(ovl2.InvalidArgumentError, match="open_mode"):
        ovl2.Driver(home, open_mode="sideways")  # type: ignore[arg-type]


@pytest.mark.parametrize("as_bytes", [True, False], ids=["bytes", "surrogateescape"])
def test_a_non_utf8_home_round_trips_as_bytes(tmp_path: pathlib.Path, as_bytes: bool) -> None:
    # Issue 10, item 10: paths under a home that is not UTF-8 came back with U+FFFD.
    raw = os.fsencode(tmp_path) + b"/h\xff\xfeome"
    home: str | bytes = raw if as_bytes else os.fsdecode(raw)
    with ovl2.Driver(home, sync=False) as d:
        assert os.fsencode(d.home) == raw
        d.create("base")
        d.create_rw("ctr", "base")
        m = d.metadata("ctr")
        assert {k: os.fsencode(v) for k, v in m.items()} == {
            "LowerDir": raw + b"/base/diff",
            "UpperDir": raw + b"/ctr/diff",
            "WorkDir": raw + b"/ctr/work",
            "MergedDir": raw + b"/ctr/merged",
        }
        assert os.path.isdir(m["UpperDir"])
        p = d.get("base")
        assert os.fsencode(p) == raw + b"/base/diff"
        d.put("base")
