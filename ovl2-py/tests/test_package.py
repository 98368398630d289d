"""The package itself: version, layout, stubs, and that the installed wheel is what runs."""

from __future__ import annotations

import pathlib
import re
import sys

import pytest

import ovl2
import ovl2._ovl2

REPO = pathlib.Path(__file__).resolve().parents[2]


def workspace_version() -> str:
    text = (REPO / "Cargo.toml").read_text()
    section = text.split("[workspace.package]", 1)[1]
    m = re.search(r'^version\s*=\s*"([^"]+)"', section, re.M)
    assert m, "no version in [workspace.package]"
    return m.group(1)


def test_version_is_the_crate_version() -> None:
    assert ovl2.__version__ == workspace_version()
    assert ovl2._ovl2.__version__ == ovl2.__version__


def test_installed_distribution_version_matches() -> None:
    from importlib.metadata import version

    assert version("ovl2") == ovl2.__version__


def test_runs_the_installed_package_not_the_source_tree() -> None:
    # The test script installs the built wheel; importing from ovl2-py/python would test
    # files that never went through maturin.
    here = pathlib.Path(ovl2.__file__).resolve()
    assert REPO / "ovl2-py" / "python" not in here.parents, here
    assert pathlib.Path(sys.prefix).resolve() in here.parents


def test_native_module_is_inside_the_package() -> None:
    assert ovl2._ovl2.__name__ == "ovl2._ovl2"
    native = pathlib.Path(ovl2._ovl2.__file__)
    assert native.parent == pathlib.Path(ovl2.__file__).parent
    # abi3: one binary for every CPython >= 3.9.
    assert native.name.endswith(".abi3.so"), native.name


def test_stubs_and_py_typed_are_shipped() -> None:
    pkg = pathlib.Path(ovl2.__file__).parent
    assert (pkg / "py.typed").is_file()
    stub = (pkg / "_ovl2.pyi").read_text()
    # Every public native name is declared in the stub.
    for name in ("Driver", "Layer", "Problem", "Mount", "Mounted", "ApplyStats", "DiffStats", "docker_init_entries", "__version__", "KERNEL_MAX_DEPTH", "DOCKER_MAX_DEPTH"):
        assert re.search(rf"^(class |def )?{name}\b", stub, re.M), name
    for method in [m for m in dir(ovl2.Driver) if not m.startswith("_")]:
        assert re.search(rf"def {method}\(", stub), f"Driver.{method} missing from _ovl2.pyi"


def test_public_names() -> None:
    for name in ovl2.__all__:
        assert hasattr(ovl2, name), name
    assert ovl2.Driver.__module__ == "ovl2"
    assert ovl2.KERNEL_MAX_DEPTH == 500
    assert ovl2.DOCKER_MAX_DEPTH == 128


@pytest.mark.parametrize("cls", [ovl2.Layer, ovl2.Problem, ovl2.Mount, ovl2.Mounted, ovl2.ApplyStats, ovl2.DiffStats])
def test_result_values_cannot_be_built_by_hand(cls: type) -> None:
    # They are values the driver hands out; no constructor keeps them truthful.
    with pytest.raises(TypeError):
        cls()
