#!/usr/bin/env bash
# ovl2-snapshotter under a real containerd 2.x (run by scripts/test-containerd2.sh inside a
# private mount namespace, as root, with containerd, ctr and containerd-shim-runc-v2 2.x first in
# PATH). Needs SNAP (ovl2-snapshotter) and OVL2 (the ovl2 CLI). Every check fails the script.
set -euo pipefail
# containerd 2.2 warns on every ctr call that cgroup v1 is deprecated: keep the log readable.
exec 2> >(grep --line-buffered -v 'support for cgroup v1 is deprecated' >&2)
HERE="$(cd "$(dirname "$0")" && pwd)"
T="$(mktemp -d /tmp/ovl2-containerd2.XXXXXX)"
export T CONTAINERD_MAJOR=2
. "$HERE/containerd-env.sh"
. "$HERE/checks.sh"

start_snapshotter
start_containerd
version=$("${CTR[@]}" version 2>/dev/null | awk '/^Server:/ {s=1} s && $1 == "Version:" {print $2; exit}')
case "$version" in 2.*) ;; *) fail "the private containerd is not 2.x: $version" ;; esac

IMG=docker.io/ovl2test/basic:1
python3 "$HERE/mkimage.py" basic "$T/basic.tar" "$IMG"
# Through 2.x's transfer service (ctr's default there): the unpack_config of the shipped example.
"${CTR[@]}" images import --snapshotter ovl2 "$T/basic.tar" >/dev/null
expect_eq "committed snapshots after import" 4 "$("${SN[@]}" ls | tail -n +2 | grep -c Committed)"
pass "containerd $version: ctr images import --snapshotter ovl2 (transfer service) makes 4 committed snapshots"

out=$("${CTR[@]}" run --rm --snapshotter ovl2 "$IMG" run1 sh -c '
  cat /data/a.txt /data/base.txt; test -e /data/del.txt && echo "del.txt survived"
  ls /old; find /many -type f | wc -l; stat -c "%u:%g %a" /many/f0000 /many/f1999 /many; echo written >/tmp/x; cat /tmp/x')
expect_eq "merged view in the container" "hello from layer 2
from the base layer
new.txt
2000
1234:5678 640
1234:5678 640
1234:5678 750
written" "$out"
pass "ctr run --snapshotter ovl2 shows the merged view (whiteout, opaque dir, 2000 files of 1234:5678)"

# containerd applies a layer with parents straight into the upperdir of the single overlay mount
# Prepare returns (archive.OverlayConvertWhiteout): the whiteout must be a 0:0 character device
# and the opaque dir must carry trusted.overlay.opaque=y, exactly as Docker's overlay2 keeps them.
# (Applied through a mounted overlay instead, the opaque dir would be whiteouts of its old entries.)
layer=$(cd "$H" && ls -d ./*/diff/old/new.txt | cut -d/ -f2)
[ -n "$layer" ] || fail "no layer holds old/new.txt"
expect_eq "the whiteout of data/del.txt in the layer" "character special file 0:0 0:0" \
  "$(stat -c '%F %t:%T %u:%g' "$H/$layer/diff/data/del.txt")"
expect_eq "the opaque dir old/ in the layer" "y" \
  "$(python3 -c 'import os,sys; print(os.getxattr(sys.argv[1], "trusted.overlay.opaque").decode())' "$H/$layer/diff/old")"
expect_eq "old/ holds only its new entry" "new.txt" "$(ls -A "$H/$layer/diff/old")"
ovl2 check >"$T/check.out" || fail "ovl2 check after containerd $version unpacked: $(cat "$T/check.out")"
expect_eq "ovl2 diff of the unpacked layer (Docker's layer format)" "data/
data/.wh.del.txt
old/
old/.wh..wh..opq
old/new.txt" "$(ovl2 diff "$layer" 2>/dev/null | tar -t | sort)"
pass "containerd $version's unpack into the upperdir is a Docker-format layer: 0:0 whiteout, opaque xattr, ovl2 check clean, ovl2 diff exports .wh. entries"

# run1's snapshot goes in containerd's background collection after `ctr run --rm`: wait for it,
# or it is counted below as a sixth layer.
for _ in $(seq 100); do [ "$(layer_count)" = 4 ] && break; sleep 0.1; done
"${CTR[@]}" run -d --snapshotter ovl2 "$IMG" bg sleep 600 >/dev/null
ovl2 check >/dev/null || fail "ovl2 check while a container runs: $(ovl2 check)"
expect_eq "ovl2 layers while a container runs" 5 "$(layer_count)"
"${CTR[@]}" tasks kill -s SIGKILL bg
for _ in $(seq 100); do "${CTR[@]}" tasks ls 2>/dev/null | grep -q "bg .*STOPPED" && break; sleep 0.1; done
"${CTR[@]}" tasks delete bg >/dev/null
"${CTR[@]}" containers rm bg
for _ in $(seq 100); do [ "$(layer_count)" = 4 ] && break; sleep 0.1; done
expect_eq "ovl2 layers after the container is gone" 4 "$(layer_count)"
pass "a running container's rootfs is an ovl2 read-write layer; ovl2 check is clean meanwhile"

# Views through 2.x's ctr: several layers a read-only overlay, one layer a ro bind.
TOP=$("${SN[@]}" ls | tail -n +2 | awk '{print $1" "$2}' | python3 -c '
import sys
rows = [l.split() for l in sys.stdin]
parents = {r[1] for r in rows if len(r) > 1}
print([r[0] for r in rows if r[0] not in parents][0])')
BASE=$("${SN[@]}" ls | tail -n +2 | awk 'NF==2 {print $1}' | head -1)
keep() { "${SN[@]}" label "$1" containerd.io/gc.root=test >/dev/null; }
"${SN[@]}" view v-top "$TOP" >/dev/null && keep v-top
"${SN[@]}" view v-base "$BASE" >/dev/null && keep v-base
mkdir "$T/v"
case "$("${SN[@]}" mounts "$T/v" v-top)" in *"-t overlay"*lowerdir=*) ;; *) fail "view mounts: $("${SN[@]}" mounts "$T/v" v-top)" ;; esac
eval "$("${SN[@]}" mounts "$T/v" v-top)"
expect_eq "view content" "new.txt" "$(ls "$T/v/old")"
touch "$T/v/nope" 2>/dev/null && fail "a view is writable"
umount "$T/v"
case "$("${SN[@]}" mounts "$T/v" v-base)" in *"-t bind"*ro*) ;; *) fail "a one-layer view is a ro bind mount: $("${SN[@]}" mounts "$T/v" v-base)" ;; esac
"${SN[@]}" rm v-top v-base
pass "ctr snapshots view/mounts: overlay view read-only, one-layer view a ro bind"

# An active snapshot: write through its mount, then 2.x's walking differ mounts it read-only
# (its upperdir, a short link, on top of the lowerdirs) to make the layer tar.
"${SN[@]}" prepare act "$TOP" >/dev/null && keep act
eval "$("${SN[@]}" mounts "$T/v" act)"
echo new >"$T/v/data/added.txt"
rm "$T/v/data/a.txt"
umount "$T/v"
"${SN[@]}" diff act >"$T/act.tgz" || fail "ctr snapshots diff act"
expect_eq "ctr snapshots diff: the layer tar" "data/
data/.wh.a.txt
data/added.txt" "$(gzip -dc "$T/act.tgz" | tar -t | sort)"
"${SN[@]}" rm act
pass "ctr snapshots prepare/mounts/diff/rm (2.x's differ mounts the active snapshot read-only)"

# The layer shapes beyond basic's, imported client-side (--local, the way nerdctl unpacks): a
# whiteout of a dir, whiteouts owned by another user, parents only in a lower layer (containerd
# makes them in the upperdir with the lower one's attributes and xattrs), a hard link, a file
# replacing a dir.
EDGE=docker.io/ovl2test/edge:1
python3 "$HERE/mkimage.py" edge "$T/edge.tar" "$EDGE"
"${CTR[@]}" images import --local --snapshotter ovl2 "$T/edge.tar" >/dev/null
out=$("${CTR[@]}" run --rm --snapshotter ovl2 "$EDGE" edge1 sh -c '
  test -e /gone && echo "gone survived"; ls -A /keep /op; stat -c "%u:%g %a" /keep; cat /swap
  test "$(stat -c %i /op/new)" = "$(stat -c %i /op/link)" && echo "op/link is a hard link of op/new"')
expect_eq "merged view of the edge image" "/keep:
b

/op:
link
new
42:43 710
now a file
op/link is a hard link of op/new" "$out"
layer=$(cd "$H" && ls -d ./*/diff/keep/b | cut -d/ -f2)
expect_eq "the whiteouts of the edge layer" "character special file 0:0 0:0
character special file 0:0 1000:1000" "$(stat -c '%F %t:%T %u:%g' "$H/$layer/diff/gone" "$H/$layer/diff/keep/a")"
expect_eq "the implicit parent keep/ took the lower layer's xattr" "kept" \
  "$(python3 -c 'import os,sys; print(os.getxattr(sys.argv[1], "user.ovl2test").decode())' "$H/$layer/diff/keep")"
ovl2 check >"$T/check.out" || fail "ovl2 check after the edge image: $(cat "$T/check.out")"
expect_eq "ovl2 diff of the edge layer" ".wh.gone
keep/
keep/.wh.a
keep/b
op/
op/.wh..wh..opq
op/link
op/new
swap" "$(ovl2 diff "$layer" 2>/dev/null | tar -t | sort)"
"${CTR[@]}" images rm --sync "$EDGE" >/dev/null
pass "ctr images import --local of the edge image: dir whiteout, others' whiteouts, implicit parents, hard link; ovl2 check clean, ovl2 diff exports it"

"${CTR[@]}" images rm --sync "$IMG" >/dev/null
assert_store_empty_and_clean "after ctr images rm --sync"
pass "removing the image leaves no snapshot, no layer, no mount and a clean ovl2 check"

# --- deep images under 2.x: 499 layers run, 501 fail cleanly ------------------------------------
# 2.x's ctr mounts the new container's snapshot read-only to read its /etc/group, moving the
# upperdir to the top of the lowerdirs. ovl2's upperdir is a short link beside its lowerdirs, so
# containerd's trimming still fits them in a page (with the layer's own diff path it failed from
# about 170 layers: "mount options is too long"). That mount has one lowerdir more than the
# container has layers, so under 2.x a container of 500 layers fails with EINVAL through any
# overlay snapshotter, containerd's own overlayfs included (measured): 499 is 2.x's most.
python3 "$HERE/mkimage.py" deep "$T/d499.tar" docker.io/ovl2test/deep:499 499
python3 "$HERE/mkimage.py" deep "$T/d501.tar" docker.io/ovl2test/deep:501 501
start=$(date +%s)
"${CTR[@]}" images import --snapshotter ovl2 "$T/d499.tar" >/dev/null
echo "  (499-layer import: $(($(date +%s) - start)) s)"
out=$("${CTR[@]}" run --rm --snapshotter ovl2 docker.io/ovl2test/deep:499 deep1 sh -c 'cat /l/1 /l/250 /l/498; ls /l | wc -l')
expect_eq "499-layer container" "1
250
498
498" "$out"
pass "a 499-layer image imports and runs under containerd $version"
"${CTR[@]}" images import --snapshotter ovl2 "$T/d501.tar" >/dev/null
if out=$("${CTR[@]}" run --rm --snapshotter ovl2 docker.io/ovl2test/deep:501 deep2 true 2>&1); then
  fail "a 501-layer container ran"
fi
case "$out" in *"max depth exceeded"*) ;; *) fail "the 501-layer refusal does not say why: $out" ;; esac
"${CTR[@]}" containers rm deep2 2>/dev/null || true
expect_eq "no active snapshot left by the refused run" "" "$("${SN[@]}" ls | tail -n +2 | grep -v Committed || true)"
expect_eq "mounts after the refused run" "" "$(mounts_of_home)"
"${CTR[@]}" images rm --sync docker.io/ovl2test/deep:499 docker.io/ovl2test/deep:501 >/dev/null
assert_store_empty_and_clean "after removing the deep images"
pass "a 501-layer image fails cleanly; removing the deep images leaves a clean store"

echo "$PASSED passed, 0 failed"
