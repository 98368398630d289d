#!/usr/bin/env bash
# ovl2-snapshotter under a real containerd (run by scripts/test-snapshotter.sh inside a private
# mount namespace, as root). Needs SNAP (ovl2-snapshotter) and OVL2 (the ovl2 CLI) in the
# environment. Every check fails the script; nothing is skipped.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
T="$(mktemp -d /tmp/ovl2-containerd.XXXXXX)"
export T
. "$HERE/containerd-env.sh"
. "$HERE/checks.sh"

start_snapshotter
start_containerd

# --- a small image: import, run, inspect -----------------------------------------------------
IMG=docker.io/ovl2test/basic:1
python3 "$HERE/mkimage.py" basic "$T/basic.tar" "$IMG"
"${CTR[@]}" images import --snapshotter ovl2 "$T/basic.tar" >/dev/null
pass "ctr images import --snapshotter ovl2"

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

# Four committed layers, in containerd's chain-id keys, each an ovl2 layer.
n=$("${SN[@]}" ls | tail -n +2 | wc -l)
expect_eq "snapshots after import" 4 "$n"
expect_eq "committed snapshots" 4 "$("${SN[@]}" ls | tail -n +2 | grep -c Committed)"
# containerd's garbage collector removes the finished container's snapshot in the background.
for _ in $(seq 100); do [ "$(layer_count)" = 4 ] && break; sleep 0.1; done
expect_eq "ovl2 layers after import and run" 4 "$(layer_count)"
ovl2 check >/dev/null || fail "ovl2 check after import: $(ovl2 check)"
pass "ctr snapshots ls: 4 committed snapshots, 4 ovl2 layers, ovl2 check clean"

# While a container runs, its active snapshot is a read-write ovl2 layer that ovl2 check accepts.
"${CTR[@]}" run -d --snapshotter ovl2 "$IMG" bg sleep 600 >/dev/null
ovl2 check >/dev/null || fail "ovl2 check while a container runs: $(ovl2 check)"
expect_eq "ovl2 layers while a container runs" 5 "$(ovl2 ls --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
"${CTR[@]}" tasks kill -s SIGKILL bg
for _ in $(seq 100); do "${CTR[@]}" tasks ls | grep -q "bg .*STOPPED" && break; sleep 0.1; done
"${CTR[@]}" tasks delete bg >/dev/null
"${CTR[@]}" containers rm bg
for _ in $(seq 100); do [ "$(layer_count)" = 4 ] && break; sleep 0.1; done
pass "a running container's rootfs is an ovl2 read-write layer; ovl2 check is clean meanwhile"

TOP=$("${SN[@]}" ls | tail -n +2 | grep Committed | awk '{print $1" "$2}' | python3 -c '
import sys
rows = [l.split() for l in sys.stdin]
parents = {r[1] for r in rows if len(r) > 1}
print([r[0] for r in rows if r[0] not in parents][0])')
"${SN[@]}" info "$TOP" | python3 -c 'import json,sys; i=json.load(sys.stdin); assert i["Kind"]=="Committed", i; assert i["Parent"], i' \
  || fail "ctr snapshots info $TOP"
usage=$("${SN[@]}" usage "$TOP" | tail -n +2)
echo "$usage" | grep -q "$TOP" || fail "ctr snapshots usage: $usage"
# The top layer holds 2000 files and a dir: at least 2001 inodes.
inodes=$("${SN[@]}" usage "$TOP" | tail -n 1 | awk '{print $NF}')
[ "$inodes" -ge 2001 ] || fail "usage of the 2000-file layer counts $inodes inodes"
pass "ctr snapshots info/usage"

# A view of one layer is a read-only bind mount; of several, a read-only overlay.
# Snapshots made by hand are no GC roots: label them at once (after the collector settled above).
keep() { "${SN[@]}" label "$1" containerd.io/gc.root=test >/dev/null; }
"${SN[@]}" view v-top "$TOP" >/dev/null && keep v-top
m=$("${SN[@]}" mounts /mnt-unused v-top)
case "$m" in *"-t overlay"*lowerdir=*) ;; *) fail "view mounts: $m" ;; esac
mkdir "$T/v"
"${SN[@]}" mounts "$T/v" v-top | grep -q "^mount " || fail "mounts prints a mount command"
eval "$("${SN[@]}" mounts "$T/v" v-top)"
expect_eq "view content" "new.txt" "$(ls "$T/v/old")"
touch "$T/v/nope" 2>/dev/null && fail "a view is writable"
umount "$T/v"
BASE=$("${SN[@]}" ls | tail -n +2 | awk 'NF==2 {print $1}' | head -1)
"${SN[@]}" view v-base "$BASE" >/dev/null && keep v-base
m=$("${SN[@]}" mounts "$T/v" v-base)
case "$m" in *"-t bind"*ro*) ;; *) fail "a one-layer view is a ro bind mount: $m" ;; esac
"${SN[@]}" rm v-top v-base
pass "ctr snapshots view/mounts: overlay view read-only, one-layer view a ro bind"

# The store stays in Docker's format: mount the top layer exactly as Docker's overlay2 driver does
# (from the home, lowerdir = the layer's `lower` file, relative l/ names).
TOP_ID=$(python3 -c '
import json, os, sys
d = sys.argv[1] + "/.ovl2/snapshotter/snapshots"
for f in os.listdir(d):
    e = json.load(open(os.path.join(d, f)))
    if e["key"].endswith("/" + sys.argv[2]):
        print(e["id"])' "$H" "$TOP")
[ -n "$TOP_ID" ] || fail "no layer for snapshot $TOP"
mkdir "$T/docker-upper" "$T/docker-work" "$T/docker-m"
(cd "$H" && mount -t overlay overlay -o "lowerdir=$(cat "$TOP_ID/link" | sed 's|^|l/|'):$(cat "$TOP_ID/lower"),upperdir=$T/docker-upper,workdir=$T/docker-work" "$T/docker-m")
expect_eq "Docker-style mount of the store" "hello from layer 2
new.txt
2000" "$(cat "$T/docker-m/data/a.txt"; ls "$T/docker-m/old"; ls "$T/docker-m/many" | wc -l)"
umount "$T/docker-m"
pass "the layers mount as Docker's overlay2 driver mounts them (relative l/ lowerdirs from the home)"

# An active snapshot: write, diff (through containerd's diff service), remove.
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
pass "ctr snapshots prepare/mounts/diff/rm"

"${CTR[@]}" images rm --sync "$IMG" >/dev/null
assert_store_empty_and_clean "after ctr images rm --sync"
pass "removing the image leaves no snapshot, no layer, no mount and a clean ovl2 check"

# --- SIGKILL the service, or containerd, at a random moment of an import; restart --------------
with_retry() { # containerd's gRPC client reconnects to a restarted service after a backoff
  for _ in $(seq 50); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  "$@"
}
for round in 1 2 3 4 5 6; do
  with_retry "${CTR[@]}" images rm --sync "$IMG"
  # ctr waits for a killed containerd to come back: bound it.
  timeout 120 "${CTR[@]}" images import --snapshotter ovl2 "$T/basic.tar" >/dev/null 2>&1 &
  imp=$!
  sleep "$((RANDOM % 2)).$((RANDOM % 10))"
  # The service first: a killed containerd can leave records that rounds after it would trip on.
  if [ "$round" -le 3 ]; then
    victim=ovl2-snapshotter; kill -9 "$SNAP_PID"; wait "$SNAP_PID" 2>/dev/null || true
    wait "$imp" || true
    ovl2 check >/dev/null || fail "round $round: ovl2 check after SIGKILL of the service: $(ovl2 check)"
    start_snapshotter
  else
    victim=containerd; kill -9 "$CTRD_PID"; wait "$CTRD_PID" 2>/dev/null || true
    start_containerd
    wait "$imp" || true
  fi
  with_retry "${SN[@]}" ls
  if [ "$victim" = ovl2-snapshotter ]; then
    # Every snapshot containerd lists is served whole: Stat works. (Not so after killing
    # containerd: one killed between the service's Commit and its own metadata commit keeps a
    # record of the old key, held by the killed import's lease until that expires; the
    # service's side stays consistent, and the lease is dropped below.)
    for key in $("${SN[@]}" ls | tail -n +2 | awk '{print $1}'); do
      "${SN[@]}" info "$key" >/dev/null || fail "round $round ($victim killed): ctr snapshots info $key"
    done
  fi
  ovl2 check >/dev/null || fail "round $round: ovl2 check after restarting $victim: $(ovl2 check)"
done
with_retry "${CTR[@]}" images import --snapshotter ovl2 "$T/basic.tar"
out=$("${CTR[@]}" run --rm --snapshotter ovl2 "$IMG" run2 sh -c 'cat /data/a.txt; ls /old; find /many -type f | wc -l')
expect_eq "merged view after the kill rounds" "hello from layer 2
new.txt
2000" "$out"
"${CTR[@]}" images rm --sync "$IMG" >/dev/null
for lease in $("${CTR[@]}" leases ls -q); do "${CTR[@]}" leases rm --sync "$lease" >/dev/null; done
assert_store_empty_and_clean "after the kill rounds, ctr images rm --sync and dropping the killed imports' leases"
pass "6 rounds of SIGKILL (service, containerd) during import: snapshots survive, ctr run works, the store ends clean"

# --- the kernel's limit: 500 layers run, 501 fail cleanly --------------------------------------
python3 "$HERE/mkimage.py" deep "$T/d500.tar" docker.io/ovl2test/deep:500 500
python3 "$HERE/mkimage.py" deep "$T/d501.tar" docker.io/ovl2test/deep:501 501
start=$(date +%s)
"${CTR[@]}" images import --snapshotter ovl2 "$T/d500.tar" >/dev/null
echo "  (500-layer import: $(($(date +%s) - start)) s)"
out=$("${CTR[@]}" run --rm --snapshotter ovl2 docker.io/ovl2test/deep:500 deep1 sh -c 'cat /l/1 /l/250 /l/499; ls /l | wc -l')
expect_eq "500-layer container" "1
250
499
499" "$out"
pass "a 500-layer image imports and runs"
"${CTR[@]}" images import --snapshotter ovl2 "$T/d501.tar" >/dev/null
if out=$("${CTR[@]}" run --rm --snapshotter ovl2 docker.io/ovl2test/deep:501 deep2 true 2>&1); then
  fail "a 501-layer container ran"
fi
case "$out" in *"max depth exceeded"*) ;; *) fail "the 501-layer refusal does not say why: $out" ;; esac
"${CTR[@]}" containers rm deep2 2>/dev/null || true
expect_eq "no active snapshot left by the refused run" "" "$("${SN[@]}" ls | tail -n +2 | grep -v Committed || true)"
expect_eq "mounts after the refused run" "" "$(mounts_of_home)"
ovl2 check >/dev/null || fail "ovl2 check after the 501 refusal: $(ovl2 check)"
pass "a 501-layer image fails cleanly: $(echo "$out" | grep -o 'max depth exceeded.*limit is [0-9]*' | head -1)"
"${CTR[@]}" images rm --sync docker.io/ovl2test/deep:500 docker.io/ovl2test/deep:501 >/dev/null
assert_store_empty_and_clean "after removing the deep images"
pass "removing the deep images leaves a clean store"

echo "$PASSED passed, 0 failed"
