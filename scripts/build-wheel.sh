#!/usr/bin/env bash
# Builds the release wheel of the Python package `ovl2` that runs on any x86_64/aarch64
# Linux with glibc 2.17 or newer: tag cp39-abi3-manylinux_2_17_<arch> (one wheel for
# CPython 3.9+), extension module stripped.
#
#   scripts/build-wheel.sh                 # wheel in target/wheels/
#   scripts/build-wheel.sh --out DIR       # elsewhere
#   PYTHON=python3.12 scripts/build-wheel.sh
#
# Needs python3 (with venv), cargo, and PyPI for maturin and ziglang, installed into a
# virtualenv under target/python/ (nothing system-wide). A binary linked on this host would
# ask for this host's glibc, so where that is newer than 2.17 it links with zig (from the
# `ziglang` package), which targets glibc 2.17's symbols; maturin then audits the result
# and refuses a wheel that needs more than its tag promises.
# It builds from the repository root's pyproject.toml, the one `pip install .` uses.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
out="$root/target/wheels"
while [ $# -gt 0 ]; do
    case "$1" in
    --out) out=$(realpath -m "${2:?--out needs a directory}"); shift 2 ;;
    *) echo "usage: $0 [--out DIR]" >&2; exit 2 ;;
    esac
done
python=${PYTHON:-python3}
need "$python" "install Python 3.9 or newer"
need cargo "install Rust from https://rustup.rs"

glibc_floor=2.17
tools="$root/target/python/build-venv"
pins=("maturin>=1.9.4,<2" "ziglang>=0.13,<0.18")
if [ ! -x "$tools/bin/maturin" ] || [ "$(cat "$tools/.pins" 2>/dev/null)" != "${pins[*]}" ]; then
    rm -rf "$tools"
    "$python" -m venv "$tools" || { echo "build-wheel.sh: '$python -m venv' failed; install the venv module (Debian: python3-venv)" >&2; exit 1; }
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
    echo "${pins[*]}" >"$tools/.pins"
fi

# zig only where needed: a host whose glibc is the floor (or older) links correctly itself.
host_glibc=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
zig=()
if [ "$(printf '%s\n%s\n' "$glibc_floor" "$host_glibc" | sort -V | tail -n1)" != "$glibc_floor" ]; then
    zig=(--zig)
fi

rm -rf "$out"
# maturin finds zig as `python3 -m ziglang` on PATH: the build virtualenv's python.
# --locked: exactly the committed Cargo.lock, as CI must.
PATH="$tools/bin:$PATH" "$tools/bin/maturin" build --release --locked --strip \
    --compatibility "manylinux_${glibc_floor/./_}" "${zig[@]}" \
    --interpreter "$tools/bin/python" --out "$out"
ls "$out"/ovl2-*.whl
