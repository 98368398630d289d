#!/usr/bin/env bash
# A rootless containerd 1.6 unpacking into ovl2: run by scripts/test-snapshotter.sh through
# scripts/rootless-userns.sh, so containerd and ovl2-snapshotter run as an unprivileged user in a
# user namespace with its subuid/subgid range mapped (as under rootlesskit), with their own /run.
# The image has files of several owners (1234:5678, 42:43), a whiteout and an opaque directory.
# `ctr run` is left out: rootless runc needs a delegated cgroup v2 tree, which the test cannot
# count on; the snapshot's mounts are checked by mounting containerd's view of the image instead.
# Needs SNAP and OVL2 in the environment; every check fails the script.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
T="$(mktemp -d)"
export T
. "$HERE/containerd-env.sh"
. "$HERE/checks.sh"

start_snapshotter
start_containerd
IMG=docker.io/ovl2test/basic:1
python3 "$HERE/mkimage.py" basic "$T/basic.tar" "$IMG"
"${CTR[@]}" images import --snapshotter ovl2 "$T/basic.tar" >/dev/null
expect_eq "committed snapshots" 4 "$("${SN[@]}" ls | tail -n +2 | grep -c Committed)"
ovl2 check >"$T/check.out" || fail "ovl2 check after a rootless import: $(cat "$T/check.out")"
pass "rootless ctr images import --snapshotter ovl2: 4 committed snapshots, ovl2 check clean"

TOP=$("${SN[@]}" ls | tail -n +2 | awk '{print $1" "$2}' | python3 -c '
import sys
rows = [l.split() for l in sys.stdin]
parents = {r[1] for r in rows if len(r) > 1}
print([r[0] for r in rows if r[0] not in parents][0])')
# A view made by hand is no GC root: label it, again if the collector took it in between.
for _ in 1 2 3 4 5; do
  "${SN[@]}" view v-top "$TOP" >/dev/null && "${SN[@]}" label v-top containerd.io/gc.root=test >/dev/null 2>&1 && break
  "${SN[@]}" rm v-top 2>/dev/null || true
  sleep 0.2
done
m=$("${SN[@]}" mounts "$T/v" v-top)
case "$m" in *"-t overlay"*userxattr*) ;; *) fail "a rootless view mounts overlay with userxattr: $m" ;; esac
mkdir "$T/v"
eval "$m"
out=$(cd "$T/v" && cat data/a.txt data/base.txt; test -e data/del.txt && echo "del.txt survived"
  ls old; find many -type f | wc -l; stat -c "%u:%g %a" many/f0000 many/f1999 many keep; cat keep/k.txt)
umount "$T/v"
expect_eq "containerd's view of the image" "hello from layer 2
from the base layer
new.txt
2000
1234:5678 640
1234:5678 640
1234:5678 750
42:43 700
kept" "$out"
"${SN[@]}" rm v-top
pass "containerd's view (overlay, userxattr): whiteout, opaque dir, 2000 files of 1234:5678, /keep of 42:43"

"${CTR[@]}" images rm --sync "$IMG" >/dev/null
assert_store_empty_and_clean "rootless, after ctr images rm --sync"
pass "rootless: removing the image leaves no snapshot, no layer, no mount and a clean ovl2 check"
echo "$PASSED rootless containerd checks passed"
