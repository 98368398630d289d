#!/usr/bin/env bash
# The main job, end to end: build ovl2, open a store (default /var/lib/ovl2, or $OVL2_HOME),
# import a small two-layer image from layer tarballs, create a container on it the way Docker
# does (an -init layer plus the container layer), mount it, change something, and export the
# container's own layer as a Docker layer tarball. Safe to re-run: it replaces only its own
# demo-* layers.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
need cargo "install Rust from https://rustup.rs"
need tar "install GNU tar"
cargo build --release --locked -q -p ovl2-cli
ovl2() { ./target/release/ovl2 "$@"; }
export OVL2_HOME="${OVL2_HOME:-/var/lib/ovl2}"
step() { printf '\n$ ovl2 %s\n' "$*"; ovl2 "$@"; }
work=$(mktemp -d /tmp/ovl2-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "store: $OVL2_HOME"
# Forget an earlier run's demo layers (containers first, then the image).
if ovl2 inspect demo-ctr >/dev/null 2>&1 || ovl2 inspect demo-ctr-init >/dev/null 2>&1; then
  ovl2 container rm --force demo-ctr
fi
for id in demo-img demo-img-1; do
  if ovl2 inspect "$id" >/dev/null 2>&1; then ovl2 rm --force "$id"; fi
done

# Two layer tarballs, as a registry would serve them: a plain tar and a gzip'ed one, the
# second deleting a file of the first with an AUFS whiteout.
mkdir -p "$work/base/etc" "$work/base/usr/share/demo" "$work/app/app" "$work/app/usr/share/demo"
echo "demo 1.0" > "$work/base/etc/os-release"
echo "127.0.0.1 localhost" > "$work/base/etc/hosts"
echo "hello from the base layer" > "$work/base/README"
echo "old notes" > "$work/base/usr/share/demo/notes"
echo 'print("hi")' > "$work/app/app/main.py"
: > "$work/app/usr/share/demo/.wh.notes"
tar --numeric-owner -C "$work/base" -cf "$work/base.tar" .
tar --numeric-owner -C "$work/app" -czf "$work/app.tar.gz" .

step import "$work/base.tar" "$work/app.tar.gz" --top demo-img
step container create demo-ctr --image demo-img
step ls
step inspect demo-ctr

printf '\n$ ovl2 mount demo-ctr\n'
merged=$(ovl2 mount demo-ctr)
echo "$merged"
echo "# the container's view: the image, the init entries, and no usr/share/demo/notes"
(cd "$merged" && find . -mindepth 1 -not -path './proc*' -not -path './sys*' | sort)
echo "container change" > "$merged/app/state.txt"
echo "box" > "$merged/etc/hostname"
rm "$merged/README"
step mounts
step umount demo-ctr

step changes demo-ctr
step diff-size demo-ctr
step du demo-ctr demo-img
printf '\n$ ovl2 diff demo-ctr -o %s\n' "$work/ctr.tar"
ovl2 diff demo-ctr -o "$work/ctr.tar"
echo "# the container's layer as Docker would export it (.wh. marks the deletion):"
tar -tvf "$work/ctr.tar"
step status
step check
