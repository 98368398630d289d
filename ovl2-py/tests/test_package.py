"""The package itself: version, layout, stubs, and that the installed wheel is what runs."""

from __future__ import annotations

import os
import pathlib
import platform
import re
import subprocess
import sys
from importlib.metadata import distribution
from typing import Any

import pytest

import ovl2
import ovl2._ovl2

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

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


@pytest.mark.parametrize(
    "cls", [ovl2.Layer, ovl2.Problem, ovl2.Mount, ovl2.Mounted, ovl2.ApplyStats, ovl2.DiffStats, ovl2.Usage]
)
def test_result_values_cannot_be_built_by_hand(cls: type) -> None:
    # They are values the driver hands out; no constructor keeps them truthful.
    with pytest.raises(TypeError):
        cls()


def elf_section_names(path: pathlib.Path) -> set[str]:
    """Section names of a 64-bit little-endian ELF file (what the wheel targets)."""
    data = path.read_bytes()
    assert data[:6] == b"\x7fELF\x02\x01", f"{path} is not a 64-bit little-endian ELF file"
    shoff = int.from_bytes(data[0x28:0x30], "little")
    shentsize, shnum, shstrndx = (int.from_bytes(data[o : o + 2], "little") for o in (0x3A, 0x3C, 0x3E))

    def header(i: int) -> tuple[int, int]:
        h = shoff + i * shentsize
        return int.from_bytes(data[h : h + 4], "little"), int.from_bytes(data[h + 0x18 : h + 0x20], "little")

    strtab = header(shstrndx)[1]
    names = set()
    for i in range(shnum):
        start = strtab + header(i)[0]
        names.add(data[start : data.index(b"\0", start)].decode())
    return names


def test_the_wheel_is_manylinux_abi3_and_stripped() -> None:
    # scripts/build-wheel.sh (which scripts/test-python.sh runs) builds for glibc 2.17, linking
    # with zig where the host's glibc is newer; maturin audits the symbols against the tag.
    wheel_meta = distribution("ovl2").read_text("WHEEL") or ""
    tags = re.findall(r"^Tag: (\S+)$", wheel_meta, re.M)
    machine = platform.machine()
    assert f"cp39-abi3-manylinux_2_17_{machine}" in tags, tags
    assert all(t.startswith("cp39-abi3-manylinux") for t in tags), tags
    built = os.environ.get("OVL2_WHEEL")
    assert built, "OVL2_WHEEL names the wheel under test (scripts/test-python.sh sets it)"
    # ovl2-VERSION-cp39-abi3-PLATFORMS.whl, PLATFORMS dot-separated (manylinux2014_x86_64 is
    # the legacy alias of manylinux_2_17_x86_64).
    name, version, py, abi, platforms = pathlib.Path(built).name.removesuffix(".whl").split("-")
    assert (name, version, py, abi) == ("ovl2", ovl2.__version__, "cp39", "abi3")
    assert f"manylinux_2_17_{machine}" in platforms.split("."), platforms
    sections = elf_section_names(pathlib.Path(ovl2._ovl2.__file__))
    assert ".symtab" not in sections and not [s for s in sections if s.startswith(".debug_")], sorted(sections)
    assert pathlib.Path(ovl2._ovl2.__file__).stat().st_size < 8 * 2**20


def test_the_wheel_imports_in_a_clean_interpreter(tmp_path: pathlib.Path) -> None:
    # -I: no user site, no PYTHONPATH, no current directory: only what the wheel installed.
    out = subprocess.run(
        [sys.executable, "-I", "-c", "import ovl2, ovl2.testing; print(ovl2.__version__, ovl2.Driver.__name__)"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.split() == [ovl2.__version__, "Driver"]


def pyproject(path: pathlib.Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)


def test_the_root_pyproject_builds_the_same_package() -> None:
    # `pip install .` at the root and `pip install ./ovl2-py` must give the same wheel.
    root, sub = pyproject(REPO / "pyproject.toml"), pyproject(REPO / "ovl2-py" / "pyproject.toml")
    assert root["build-system"] == sub["build-system"]
    assert root["project"] == sub["project"]
    maturin = dict(sub["tool"]["maturin"])
    for key in ("python-source", "manifest-path"):
        maturin[key] = f"ovl2-py/{maturin[key]}"
    assert root["tool"]["maturin"] == maturin
    assert set(root["tool"]) == {"maturin"}, "pytest and other tools read ovl2-py/pyproject.toml"
    assert root["project"]["entry-points"]["pytest11"] == {"ovl2": "ovl2.pytest_plugin"}
