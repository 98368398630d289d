#!/bin/sh
# Builds the `ovl2` command and installs it:
#   $PREFIX/bin/ovl2                         stripped
#   $PREFIX/bin/.debug/ovl2.debug            its debug info (see split-debug.sh)
#   $PREFIX/share/man/man1/ovl2.1, ovl2-COMMAND.1
#   $PREFIX/share/bash-completion/completions/ovl2, share/zsh/site-functions/_ovl2,
#   $PREFIX/share/fish/vendor_completions.d/ovl2.fish
#
# Usage: scripts/install-cli.sh [PREFIX=/usr/local] [PROFILE=release|debug] [DESTDIR=...]
# (as arguments or environment variables; DESTDIR stages a package root). Needs objcopy.
set -eu
for a in "$@"; do
    case "$a" in
    PREFIX=* | PROFILE=* | DESTDIR=*) export "$a" ;;
    *) echo "usage: $0 [PREFIX=dir] [PROFILE=release|debug] [DESTDIR=dir]" >&2; exit 2 ;;
    esac
done
PREFIX=${PREFIX:-/usr/local}
PROFILE=${PROFILE:-release}
DESTDIR=${DESTDIR:-}
case "$PREFIX" in /*) ;; *) echo "PREFIX must be absolute, got $PREFIX" >&2; exit 2 ;; esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/split-debug.sh
command -v objcopy >/dev/null || { echo "install-cli.sh needs objcopy (binutils)" >&2; exit 1; }
case "$PROFILE" in
release) cargo_flags=--release; outdir=release ;;
debug) cargo_flags=; outdir=debug ;;
*) echo "PROFILE must be release or debug" >&2; exit 2 ;;
esac
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
# shellcheck disable=SC2086
cargo build -p ovl2-cli --locked $cargo_flags
built="$target_dir/$outdir/ovl2"

bin="$DESTDIR$PREFIX/bin"
share="$DESTDIR$PREFIX/share"
install -d "$bin" "$share/man/man1" "$share/bash-completion/completions" \
    "$share/zsh/site-functions" "$share/fish/vendor_completions.d"
install_stripped "$built" "$bin/ovl2" 0755
# Pages and completions come from the installed binary: they describe exactly it.
"$bin/ovl2" man --out-dir "$share/man/man1"
"$bin/ovl2" completions bash >"$share/bash-completion/completions/ovl2"
"$bin/ovl2" completions zsh >"$share/zsh/site-functions/_ovl2"
"$bin/ovl2" completions fish >"$share/fish/vendor_completions.d/ovl2.fish"
echo "installed ovl2 $("$bin/ovl2" --version | awk '{print $2}') ($PROFILE) into $DESTDIR$PREFIX"
