#!/usr/bin/env bash
# Tests the Python module `ovl2` the way a user gets it: builds the release wheel with
# scripts/build-wheel.sh (manylinux, stripped; maturin in a virtualenv of its own), installs
# it into a fresh virtualenv, runs the pytest suite (ovl2-py/tests) against the
# installed package, checks the hand-written stubs against the module (mypy stubtest and
# --strict), then runs examples/python/quickstart.py.
#
# Self-contained: needs only python3 (>= 3.9, with the venv module), cargo, and PyPI for
# maturin, ziglang, pytest and mypy. The virtualenv and wheel live under target/ (not committed).
#   PYTHON=python3.12 scripts/test-python.sh      # another interpreter
#   scripts/test-python.sh -k threads -x          # extra arguments go to pytest
# Tests that need root and overlayfs fail rather than skip when CI=true or OVL2_REQUIRE_MOUNT=1.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
python=${PYTHON:-python3}
need "$python" "install Python 3.9 or newer"
need cargo "install Rust from https://rustup.rs"
venv="$root/target/python/venv"
wheels="$root/target/python/wheels"

step() { printf '\n== %s\n' "$*"; }
# new_venv DIR PACKAGE...: a fresh virtualenv at DIR with PACKAGEs from PyPI.
new_venv() {
    local dir=$1
    shift
    rm -rf "$dir"
    if ! "$python" -m venv "$dir"; then
        echo "test-python.sh: '$python -m venv' failed; install the venv module (Debian: python3-venv)" >&2
        exit 1
    fi
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}

step "build the wheel: scripts/build-wheel.sh ($("$python" --version 2>&1))"
scripts/build-wheel.sh --out "$wheels"

step "pip install the wheel into a fresh virtualenv (${venv#"$root"/})"
new_venv "$venv" "pytest>=7" "mypy>=1.18" "tomli>=1.1; python_version<'3.11'"
wheel=$(ls "$wheels"/ovl2-*.whl)
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-index "$wheel"

step "pytest ovl2-py/tests"
# Run from outside the source tree so `import ovl2` can only find the installed wheel;
# pytest exits 5 when it collects nothing, which fails this script too.
cd "$root/target/python"
OVL2_WHEEL="$wheel" "$venv/bin/python" -m pytest -p no:cacheprovider -ra "$root/ovl2-py/tests" "$@"

step "stubs: _ovl2.pyi matches the module (stubtest); tests and example type-check against it"
# pyo3 classes are final and layout-disjoint; PEP 800 markers are not worth a
# typing_extensions import in the stub.
"$venv/bin/python" -m mypy.stubtest --ignore-disjoint-bases ovl2
"$venv/bin/python" -m mypy --strict --no-incremental "$root/ovl2-py/tests" "$root/examples/python/quickstart.py" \
    "$root/examples/python/test_with_fixtures.py"

step "examples/python/quickstart.py"
"$venv/bin/python" "$root/examples/python/quickstart.py"
echo "test-python.sh: ok"
