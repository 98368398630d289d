#!/bin/sh
# Regenerates include/ovl2.h from ovl2-ffi with the pinned cbindgen.
#   scripts/gen-header.sh           rewrite include/ovl2.h
#   scripts/gen-header.sh --verify  fail (exit 1, with a diff) when the committed header is stale
set -eu
CBINDGEN_VERSION=0.29.4
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if ! cbindgen --version 2>/dev/null | grep -qx "cbindgen $CBINDGEN_VERSION"; then
    cargo install cbindgen --version "$CBINDGEN_VERSION" --locked
fi
case "${1:-}" in
--verify)
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    cbindgen --quiet --config ovl2-ffi/cbindgen.toml --crate ovl2-ffi --output "$tmp"
    if ! diff -u include/ovl2.h "$tmp"; then
        echo "include/ovl2.h is stale: run scripts/gen-header.sh and commit the result" >&2
        exit 1
    fi
    echo "include/ovl2.h is current"
    ;;
"")
    cbindgen --quiet --config ovl2-ffi/cbindgen.toml --crate ovl2-ffi --output include/ovl2.h
    ;;
*)
    echo "usage: $0 [--verify]" >&2
    exit 2
    ;;
esac
