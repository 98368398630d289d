#!/bin/sh
# Builds libovl2 and installs it for C and Go users:
#   $PREFIX/lib/libovl2.so.X.Y.Z, libovl2.so.0 -> .so.X.Y.Z, libovl2.so -> .so.0, libovl2.a
#   $PREFIX/lib/.debug/libovl2.so.X.Y.Z.debug   (its debug info; see split-debug.sh)
#   $PREFIX/include/ovl2.h
#   $PREFIX/lib/pkgconfig/ovl2.pc   (Libs.private for static linking from rustc itself)
# The shared library is stripped and linked to its .debug file; the static one has no debug
# info (as distributions ship them). Needs objcopy (binutils).
#
# Not cargo-c (`cargo cinstall`), which does the soname, pkg-config and header part too: it
# installs no stripped library with split debug info, so this script would still be needed;
# by default it names 0.x libraries libovl2.so.0.MINOR (not the libovl2.so.0 programs link
# against) and generates the header with its own cbindgen rather than the pinned one; and
# installing it compiles all of cargo from crates.io (Debian 12's cargo-c 0.9.14 predates
# this toolchain), minutes more CI on every fresh machine for no gain.
#
# Usage: scripts/install-lib.sh [PREFIX=/usr/local] [PROFILE=release|debug] [DESTDIR=...]
# (as arguments or environment variables; DESTDIR stages a package root).
set -eu
for a in "$@"; do
    case "$a" in
    PREFIX=* | PROFILE=* | DESTDIR=* | LIBDIR=*) export "$a" ;;
    *) echo "usage: $0 [PREFIX=dir] [PROFILE=release|debug] [DESTDIR=dir] [LIBDIR=dir]" >&2; exit 2 ;;
    esac
done
PREFIX=${PREFIX:-/usr/local}
PROFILE=${PROFILE:-release}
LIBDIR=${LIBDIR:-$PREFIX/lib}
DESTDIR=${DESTDIR:-}
case "$PREFIX" in /*) ;; *) echo "PREFIX must be absolute, got $PREFIX" >&2; exit 2 ;; esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/split-debug.sh
command -v objcopy >/dev/null || { echo "install-lib.sh needs objcopy (binutils)" >&2; exit 1; }
case "$PROFILE" in
release) cargo_flags=--release; outdir=release ;;
debug) cargo_flags=; outdir=debug ;;
*) echo "PROFILE must be release or debug" >&2; exit 2 ;;
esac
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

# Ask rustc which system libraries a static link needs, rather than guessing; this
# recompiles only the ovl2-ffi crate. Then build the normal artefacts.
# shellcheck disable=SC2086
native=$(cargo rustc -p ovl2-ffi --lib $cargo_flags --crate-type staticlib -- --print native-static-libs 2>&1 |
    sed -n 's/.*native-static-libs: //p' | tail -n1)
[ -n "$native" ] || { echo "could not learn native-static-libs from rustc" >&2; exit 1; }
# shellcheck disable=SC2086
cargo build -p ovl2-ffi $cargo_flags

version=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="ovl2-ffi"))')
major=${version%%.*}
[ "$major" = 0 ] || { echo "soname is libovl2.so.0 but the version is $version; update build.rs" >&2; exit 1; }

lib="$DESTDIR$LIBDIR"
inc="$DESTDIR$PREFIX/include"
pc="$lib/pkgconfig"
install -d "$lib" "$inc" "$pc"
install_stripped "$target_dir/$outdir/libovl2.so" "$lib/libovl2.so.$version" 0755
ln -sf "libovl2.so.$version" "$lib/libovl2.so.$major"
ln -sf "libovl2.so.$major" "$lib/libovl2.so"
tmp=$(mktemp "$lib/.libovl2.a.XXXXXX")
objcopy --strip-debug "$target_dir/$outdir/libovl2.a" "$tmp"
chmod 0644 "$tmp"
mv -f "$tmp" "$lib/libovl2.a"
install -m 0644 include/ovl2.h "$inc/ovl2.h"
cat >"$pc/ovl2.pc" <<PC
prefix=$PREFIX
libdir=$LIBDIR
includedir=\${prefix}/include

Name: ovl2
Description: Docker's overlay2 layer store as a library
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lovl2
Libs.private: $native
PC
echo "installed libovl2 $version ($PROFILE) into $DESTDIR$PREFIX"
