#!/usr/bin/env bash
# The main job, end to end: build ovl2, open a store (default /var/lib/ovl2, or $OVL2_HOME),
# build an image chain, start a container layer on it, mount it, change something, and show
# what landed where. Safe to re-run: it replaces only its own demo-* layers.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
need cargo "install Rust from https://rustup.rs"
cargo build --release --locked -q -p ovl2-cli
ovl2() { ./target/release/ovl2 "$@"; }
export OVL2_HOME="${OVL2_HOME:-/var/lib/ovl2}"
step() { printf '\n$ ovl2 %s\n' "$*"; ovl2 "$@"; }

echo "store: $OVL2_HOME"
for id in demo-ctr demo-app demo-base; do
  if ovl2 inspect "$id" >/dev/null 2>&1; then
    while ovl2 mounts | cut -f1 | grep -qx "$id"; do ovl2 umount "$id"; done
    ovl2 rm --force "$id"
  fi
done

step create demo-base
mkdir -p "$OVL2_HOME/demo-base/diff/etc"
echo "demo 1.0" > "$OVL2_HOME/demo-base/diff/etc/os-release"
echo "hello from the base layer" > "$OVL2_HOME/demo-base/diff/README"
step create demo-app --parent demo-base
mkdir -p "$OVL2_HOME/demo-app/diff/app"
echo 'print("hi")' > "$OVL2_HOME/demo-app/diff/app/main.py"
step create demo-ctr --parent demo-app --rw
step ls
step inspect demo-ctr

printf '\n$ ovl2 mount demo-ctr\n'
merged=$(ovl2 mount demo-ctr)
echo "$merged"
echo "# merged view:"; (cd "$merged" && find . -mindepth 1 | sort)
echo "container change" > "$merged/app/state.txt"
rm "$merged/README"
echo "# the container's own layer now holds (a 0:0 char device is a whiteout):"
(cd "$OVL2_HOME/demo-ctr/diff" && find . -mindepth 1 -printf '%M %p\n' | sort -k2)
step mounts
step umount demo-ctr
step status
step check
