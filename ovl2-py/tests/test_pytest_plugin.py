"""The pytest plugin the wheel ships (ovl2.pytest_plugin) and its helpers (ovl2.testing):
registered by the entry point, fixtures building what they promise, teardown failing a test
that leaves mounts behind, and the mount policy (skip, or fail when mounts are required)."""

from __future__ import annotations

import io
import os
import pathlib
import stat
import textwrap

import pytest

import ovl2
import ovl2.pytest_plugin
from conftest import mounts_under, need_mounts
from ovl2.pytest_plugin import ContainerFactory, ImageFactory
from ovl2.testing import OPAQUE, WHITEOUT, Contents, Dir, File, Hardlink, Symlink, build_image, layer_tar

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "python" / "test_with_fixtures.py"


def test_the_plugin_is_loaded_from_the_entry_point(pytestconfig: pytest.Config) -> None:
    from importlib.metadata import entry_points

    [ep] = [ep for ep in entry_points(group="pytest11") if ep.name == "ovl2"]
    assert ep.value == "ovl2.pytest_plugin"
    assert pytestconfig.pluginmanager.get_plugin("ovl2") is ovl2.pytest_plugin


def test_ovl2_store_is_fresh_and_in_tmp_path(ovl2_store: ovl2.Driver, tmp_path: pathlib.Path) -> None:
    assert ovl2_store.home == tmp_path / "store"
    assert ovl2_store.layers() == []
    assert not ovl2_store.sync, "no fsyncs in a test store by default"


class TestStoreOptions:
    @pytest.fixture
    def ovl2_store_options(self) -> dict[str, object]:
        return {"max_depth": ovl2.DOCKER_MAX_DEPTH}

    def test_overriding_the_options(self, ovl2_store: ovl2.Driver) -> None:
        assert ovl2_store.max_depth == ovl2.DOCKER_MAX_DEPTH
        assert ovl2_store.sync, "the override replaces the defaults"


def test_ovl2_image_from_a_dict_of_every_kind(ovl2_image: ImageFactory, ovl2_store: ovl2.Driver) -> None:
    need_mounts()  # whiteouts are character devices: mknod needs root
    base = ovl2_image({"etc/motd": "hi\n", "var/cache/old": "x", "bin": Dir(mode=0o700)})
    image = ovl2_image(
        {
            "etc/motd": WHITEOUT,
            "var/cache": OPAQUE,
            "var/cache/new": b"\x00\xff",
            "bin/tool": File("#!/bin/sh\n", mode=0o755, uid=12, gid=34),
            "bin/sh": Symlink("tool"),
            "bin/tool2": Hardlink("bin/tool"),
        },
        parent=base,
    )
    assert base.layers == ("image-0",) and image.layers == ("image2-0",)
    assert ovl2_store.parent(image.top) == base.top
    assert image.digests[0].startswith("sha256:")

    diff = ovl2_store.home / image.top / "diff"
    wh = os.lstat(diff / "etc" / "motd")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert {os.fsdecode(n) for n in os.listxattr(diff / "var" / "cache")} & {
        "trusted.overlay.opaque",
        "user.overlay.opaque",
    }
    assert [p.name for p in (diff / "var" / "cache").iterdir()] == ["new"]
    assert (diff / "var" / "cache" / "new").read_bytes() == b"\x00\xff"
    tool = os.lstat(diff / "bin" / "tool")
    assert (stat.S_IMODE(tool.st_mode), tool.st_uid, tool.st_gid) == (0o755, 12, 34)
    assert os.readlink(diff / "bin" / "sh") == "tool"
    assert os.lstat(diff / "bin" / "tool2").st_ino == tool.st_ino
    assert stat.S_IMODE(os.lstat(ovl2_store.home / base.top / "diff" / "bin").st_mode) == 0o700


def test_ovl2_image_from_tarballs(ovl2_image: ImageFactory, ovl2_store: ovl2.Driver, tmp_path: pathlib.Path) -> None:
    (tmp_path / "layer.tar.gz").write_bytes(layer_tar({"from-a-path": "1"}, gzip=True))
    image = ovl2_image(
        layer_tar({"from-bytes": "0"}),
        tmp_path / "layer.tar.gz",
        str(tmp_path / "layer.tar.gz"),
        io.BytesIO(layer_tar({"from-a-file-object": "3"})),
        name="app",
    )
    assert image.layers == ("app-0", "app-1", "app-2", "app-3")
    assert [l.parent for l in ovl2_store.layers()] == [None, "app-0", "app-1", "app-2"]
    assert image.digests[1] == image.digests[2], "the same tarball has the same DiffID"
    home = ovl2_store.home
    assert (home / "app-0" / "diff" / "from-bytes").read_text() == "0"
    assert (home / "app-1" / "diff" / "from-a-path").read_text() == "1"
    assert (home / "app-3" / "diff" / "from-a-file-object").read_text() == "3"


def test_layer_tar_is_deterministic_and_refuses_bad_paths() -> None:
    entries: dict[str, Contents] = {"a": "1", "d": Dir(), "d/l": Symlink("../a")}
    assert layer_tar(entries) == layer_tar(dict(entries))
    for bad in ("/etc/passwd", "", "/"):
        with pytest.raises(ValueError, match="must be relative"):
            layer_tar({bad: "x"})
    with pytest.raises(ValueError, match="is not a file"):
        layer_tar({"a": 3})  # type: ignore[dict-item]


def test_build_image_is_all_or_nothing(ovl2_store: ovl2.Driver) -> None:
    with pytest.raises(ovl2.CorruptArchiveError):
        build_image(ovl2_store, [{"ok": "1"}, b"this is not a tar" * 100], name="broken")
    assert ovl2_store.layers() == [], "the layers made before the bad one are gone"
    with pytest.raises(ValueError, match="at least one layer"):
        build_image(ovl2_store, [])
    ovl2_store.create("taken-0")
    with pytest.raises(ovl2.LayerExistsError):
        build_image(ovl2_store, [{"a": "1"}], name="taken")
    assert [l.id for l in ovl2_store.layers()] == ["taken-0"]


def test_ovl2_container_is_docker_shaped_and_mounted(
    ovl2_image: ImageFactory, ovl2_container: ContainerFactory, ovl2_store: ovl2.Driver
) -> None:
    image = ovl2_image({"etc/os-release": "ID=t\n"})
    ctr = ovl2_container(image)
    assert (ctr.id, ctr.init_id) == ("ctr", "ctr-init")
    assert ovl2_store.parent("ctr") == "ctr-init" and ovl2_store.parent("ctr-init") == image.top
    assert mounts_under(ovl2_store.home) == [str(ctr.root)]
    assert (ctr.root / "etc" / "os-release").read_text() == "ID=t\n"
    assert (ctr.root / ".dockerenv").is_file()
    assert ctr.changes() == []
    second = ovl2_container(image, init_entries=[("dir", "/only-this")], volatile=True)
    assert second.id == "ctr2"
    assert (second.root / "only-this").is_dir() and not (second.root / ".dockerenv").exists()
    assert [m.id for m in ovl2_store.mounts()] == ["ctr", "ctr2"]


def run_inner(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    """Runs ``source`` as a test file in a pytest of its own, the plugin loaded by its entry
    point as for any user."""
    pytester.makepyfile(test_inner=textwrap.dedent(source))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def test_a_test_leaving_a_mount_errors_at_teardown(pytester: pytest.Pytester) -> None:
    need_mounts()
    result = run_inner(
        pytester,
        """
        def test_leaks(ovl2_store):
            ovl2_store.create("base")
            ovl2_store.create_rw("rw", "base")
            ovl2_store.get("rw")
        """,
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*the test left mounts in its ovl2 store*rw/merged*"])
    assert mounts_under(pytester.path) == [], "the leftover was unmounted"


def test_containers_are_taken_down_in_order(pytester: pytest.Pytester) -> None:
    need_mounts()
    # The container fixture is asked for before the image: the store's leftover check must
    # still come after the containers are gone.
    result = run_inner(
        pytester,
        """
        def test_one(ovl2_container, ovl2_image, ovl2_store):
            ovl2_container(ovl2_image({"a": "1"}))
            ovl2_container(ovl2_image({"b": "2"}))
            assert len(ovl2_store.mounts()) == 2

        def test_a_failing_body(ovl2_container, ovl2_image):
            ovl2_container(ovl2_image({"a": "1"}))
            raise RuntimeError("boom")
        """,
    )
    result.assert_outcomes(passed=1, failed=1)
    assert mounts_under(pytester.path) == []


@pytest.mark.parametrize(
    "require, env",
    [([], None), (["--ovl2-require-mount"], None), (["-o", "ovl2_require_mount=true"], None), ([], "1")],
)
def test_without_root_containers_skip_unless_required(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, require: list[str], env: str | None
) -> None:
    if env is None:
        monkeypatch.delenv("OVL2_REQUIRE_MOUNT", raising=False)
    else:
        monkeypatch.setenv("OVL2_REQUIRE_MOUNT", env)
    pytester.makeconftest("import os\nos.geteuid = lambda: 1000\n")
    result = run_inner(
        pytester,
        """
        def test_needs_mounts(ovl2_container):
            raise AssertionError("never reached")

        def test_no_mounts_needed(ovl2_image):
            pass
        """,
        "-rs",
        *require,
    )
    if require or env:
        result.assert_outcomes(passed=1, errors=1)
        result.stdout.fnmatch_lines(["*mounting overlays needs root, and mounts are required*"])
    else:
        result.assert_outcomes(passed=1, skipped=1)
        result.stdout.fnmatch_lines(["*mounting overlays needs root*"])


def test_the_documented_example_passes(pytester: pytest.Pytester) -> None:
    need_mounts()
    pytester.makepyfile(test_example=EXAMPLE.read_text())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert mounts_under(pytester.path) == []


def test_the_docs_show_the_example_verbatim() -> None:
    doc = (REPO / "docs" / "python-testing.md").read_text()
    body = EXAMPLE.read_text().split('"""', 2)[2].strip()
    assert body in doc, "docs/python-testing.md must show examples/python/test_with_fixtures.py"
