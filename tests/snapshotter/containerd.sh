#!/usr/bin/env bash
# ovl2-snapshotter under a real containerd (run by scripts/test-snapshotter.sh inside a private
# mount namespace, as root). Needs SNAP (ovl2-snapshotter), OVL2 (the ovl2 CLI) and DOCKERDRIVER
# (tests/snapshotter-docker: Docker's overlay2 driver) in the environment. Every check fails the
# script; nothing is skipped.
set -euo pipefail
: "${DOCKERDRIVER:?}"
HERE="$(cd "$(dirname "$0")" && pwd)"
T="$(mktemp -d /tmp/ovl2-containerd.XXXXXX)"
export T
. "$HERE/containerd-env.sh"
. "$HERE/checks.sh"

# What a killed process may leave in a store, and the next open repairs (docs/store.md, and
# ovl2-core's crash test): a stale staging entry, a dangling l/ link, a missing committed marker.
# Before the killed service restarts, ovl2 check may report these and nothing else.
check_only_crash_leftovers() { # check_only_crash_leftovers WHAT
  ovl2 check --json >"$T/check.json" 2>"$T/check.err" || true
  python3 -c '
import json, sys
leftovers = {"stale_staging", "dangling_short_link", "missing_committed"}
sys.exit(any(p["kind"] not in leftovers for p in json.load(open(sys.argv[1]))["problems"]))' "$T/check.json" \
    || fail "$1: $(cat "$T/check.json" "$T/check.err")"
}

start_snapshotter
start_containerd

# --- a small image: import, run, inspect -----------------------------------------------------
IMG=docker.io/ovl2test/basic:1
python3 "$HERE/mkimage.py" basic "$T/basic.tar" "$IMG"
"${CTR[@]}" images import --snapshotter ovl2 "$T/basic.tar" >/dev/null
pass "ctr images import --snapshotter ovl2"

RUN_SCRIPT='cat /data/a.txt /data/base.txt; test -e /data/del.txt && echo "del.txt survived"
  ls /old; find /many -type f | wc -l; stat -c "%u:%g %a" /many/f0000 /many/f1999 /many /keep; cat /keep/k.txt
  echo written >/tmp/x; cat /tmp/x'
RUN_OUT="hello from layer 2
from the base layer
new.txt
2000
1234:5678 640
1234:5678 640
1234:5678 750
42:43 700
kept
written"
out=$("${CTR[@]}" run --rm --snapshotter ovl2 "$IMG" run1 sh -c "$RUN_SCRIPT")
expect_eq "merged view in the container" "$RUN_OUT" "$out"
pass "ctr run --snapshotter ovl2 shows the merged view (whiteout, opaque dir, 2000 files of 1234:5678, /keep)"

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

# --- containerd unpacked layers 2 and up straight into the upperdir ----------------------------
# containerd 1.6's applier (diff/apply/apply_linux.go) writes a layer tar straight into the
# upperdir when Prepare returns a single overlay mount, which ovl2 returns for every snapshot with a
# parent (a base is a bind mount, unpacked through a temporary mount): whiteouts become 0:0 char
# devices owned as their tar entry says, an opaque dir gets trusted.overlay.opaque, and a missing
# parent dir takes its owner and mode from the lowerdirs it parses out of our mount (the short
# l/ links). Unpacked through a mounted view instead, the kernel would leave a whiteout for
# old/gone.txt and no xattr: these checks tell the two paths apart.
chain() { # "NAME ID PARENT_ID" of the committed snapshots, base first (one image in the store);
  # the index keeps the service's keys, `<namespace>/<n>/<name>`, and containerd shows the name
  python3 - "$H" <<'PY'
import json, os, sys
d = sys.argv[1] + "/.ovl2/snapshotter/snapshots"
es = [json.load(open(os.path.join(d, f))) for f in os.listdir(d)]
es = {e["key"]: e for e in es if e["kind"] == "committed"}
key = None
while True:
    nxt = [k for k, e in es.items() if e.get("parent") == key]
    if not nxt:
        break
    assert len(nxt) == 1, nxt
    e = es[nxt[0]]
    print(nxt[0].split("/", 2)[2], e["id"], es[key]["id"] if key else "")
    key = nxt[0]
PY
}
mapfile -t CHAIN < <(chain)
expect_eq "committed chain length" 4 "${#CHAIN[@]}"
L=() # layer ids, base first
for c in "${CHAIN[@]}"; do read -r _ id _ <<<"$c"; L+=("$id"); done
[ "$(echo "${CHAIN[3]}" | cut -d' ' -f1)" = "$TOP" ] || fail "the chain's top ${CHAIN[3]} is not $TOP"
expect_eq "the whiteout in layer 3's diff" "character special file 0:0 0:0" \
  "$(stat -c '%F %t:%T %u:%g' "$H/${L[2]}/diff/data/del.txt")"
expect_eq "the opaque dir in layer 3's diff" "b'y'" \
  "$(python3 -c 'import os,sys; print(os.getxattr(sys.argv[1], "trusted.overlay.opaque"))' "$H/${L[2]}/diff/old")"
expect_eq "layer 3's diff of the opaque dir (no whiteout of old/gone.txt)" "new.txt" "$(ls -A "$H/${L[2]}/diff/old")"
expect_eq "layer 4's /keep, made by the unpacker from the layers below" "42:43 700" \
  "$(stat -c '%u:%g %a' "$H/${L[3]}/diff/keep")"
expect_eq "char devices in the base layer (unpacked through a mount)" "" "$(find "$H/${L[0]}/diff" -type c)"
ovl2 check >/dev/null || fail "ovl2 check of containerd's unpacked layers: $(ovl2 check)"
pass "containerd unpacked layers 2-4 straight into the upperdir: whiteout a 0:0 device, opaque xattr, /keep from the lowerdirs; ovl2 check accepts them"

# --- Docker's own overlay2 driver opens the containerd-filled store -----------------------------
# For each committed layer, Docker's driver (Exists, GetMetadata, Get, Put, Diff) sees what
# containerd sees: its mount of the layer has the tree of containerd's view of that snapshot, and
# its Diff (the tar `docker push` sends) is byte for byte `ovl2 diff`.
mkdir "$T/docker"
kept_view() { # kept_view KEY PARENT: a view labelled gc.root before containerd's collector takes it
  # (a collection scheduled by an earlier removal can run between ctr's view and label calls)
  for _ in 1 2 3 4 5; do
    "${SN[@]}" view "$1" "$2" >/dev/null && keep "$1" 2>/dev/null && return 0
    "${SN[@]}" rm "$1" 2>/dev/null || true
    sleep 0.2
  done
  fail "could not make a labelled view $1 of $2"
}
specs=()
for c in "${CHAIN[@]}"; do read -r _ id parent <<<"$c"; specs+=("$id${parent:+:$parent}"); done
"$DOCKERDRIVER" layers "$H" "$T/docker" "${specs[@]}" || fail "Docker's driver on the containerd-filled store"
n=0
for c in "${CHAIN[@]}"; do
  read -r key id _ <<<"$c"
  n=$((n + 1))
  kept_view "dv$n" "$key"
  eval "$("${SN[@]}" mounts "$T/v" "dv$n")"
  "$DOCKERDRIVER" tree "$T/v" >"$T/docker/$id.ctrd-tree"
  umount "$T/v"
  "${SN[@]}" rm "dv$n"
  diff -u "$T/docker/$id.ctrd-tree" "$T/docker/$id.tree" >&2 \
    || fail "layer $n: Docker's mount of $id differs from containerd's view of $key"
  ovl2 diff --no-digest -o "$T/docker/$id.ovl2.tar" "$id" >/dev/null 2>"$T/diff.err" \
    || fail "ovl2 diff $id: $(cat "$T/diff.err")"
  cmp "$T/docker/$id.ovl2.tar" "$T/docker/$id.tar" || fail "layer $n: ovl2 diff $id differs from Docker's Diff"
done
top_tree="$T/docker/${L[3]}.tree"
expect_eq "files of 1234:5678 mode 0640 under /many in Docker's mount of the top layer" 2000 \
  "$(grep -c '^many/f[0-9]* file 0640 1234:5678 ' "$top_tree")"
grep -q '^keep dir 0700 42:43 ' "$top_tree" || fail "Docker's mount of the top layer lacks /keep (42:43, 0700)"
grep -q '^data/del.txt ' "$top_tree" && fail "Docker's mount of the top layer shows the deleted data/del.txt"
expect_eq "old/ in Docker's mount of the top layer" "old/new.txt" "$(grep -o '^old/[^ ]*' "$top_tree")"
tar_names() { tar -tf "$1" | sort; }
expect_eq "layer 3's tar (from the upperdir containerd wrote)" "data/
data/.wh.del.txt
old/
old/.wh..wh..opq
old/new.txt" "$(tar_names "$T/docker/${L[2]}.tar")"
expect_eq "layer 4's tar: the 2000 files, /keep and /keep/k.txt" "2003" "$(tar_names "$T/docker/${L[3]}.tar" | grep -cE '^many/|^keep/')"
pass "Docker's overlay2 driver mounts each containerd layer with containerd's view; ovl2 diff = Docker's Diff byte for byte (whiteout, opaque, 2000 files)"

# Docker's way of running a container on the image (init layer, container layer, Get, chroot)
# shows what `ctr run` showed, and leaves the store as it found it.
out=$("$DOCKERDRIVER" run "$H" "${L[3]}" "$RUN_SCRIPT") || fail "a Docker container on the containerd-filled image"
expect_eq "merged view in a Docker container" "$RUN_OUT" "$out"
expect_eq "mounts after Docker's driver" "" "$(mounts_of_home)"
# (the views above go in containerd's background collection: wait for it)
for _ in $(seq 100); do [ "$(layer_count)" = 4 ] && break; sleep 0.1; done
expect_eq "ovl2 layers after Docker's container is removed" 4 "$(layer_count)"
ovl2 check >/dev/null || fail "ovl2 check after Docker's driver used the store: $(ovl2 check)"
pass "a container made by Docker's driver on the containerd-filled image sees what ctr run saw; the store stays clean"

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
    check_only_crash_leftovers "round $round: ovl2 check after SIGKILL of the service"
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

# --- SIGKILL the service, or containerd, at a random moment of `ctr run` and container create/rm -
# A workload of three `ctr run --rm` and three `ctr containers create` + `rm` runs while the
# service (rounds 1-3) or containerd (rounds 4-6) is killed at a random moment and restarted.
# Before a killed service restarts, ovl2 check finds only what a killed process may leave.
# After each round: containerd lists only snapshots the service can Stat, the image's committed
# snapshots all survive, `ovl2 check` is clean, and once the round's leftover tasks and
# containers are removed no mount of the home is left and a new `ctr run` shows the image.
with_retry "${CTR[@]}" images import --snapshotter ovl2 "$T/basic.tar"
committed() { "${SN[@]}" ls | tail -n +2 | grep Committed | awk '{print $1}' | sort; }
COMMITTED=$(committed)
expect_eq "committed snapshots before the run rounds" 4 "$(echo "$COMMITTED" | wc -l)"
workload() { # prints one letter per step: r/c/d (run, create, rm) done, R/C/D failed
  local r=$1 i
  step() { # ctr waits for a killed containerd to come back: bound every call
    if timeout 60 "${CTR[@]}" "${@:2}" >/dev/null 2>&1; then printf %s "$1"; else printf %s "${1^^}"; fi
  }
  for i in 1 2 3; do
    step r run --rm --snapshotter ovl2 "$IMG" "kr$r-$i" sh -c 'cat /data/a.txt; sleep 0.2'
    step c containers create --snapshotter ovl2 "$IMG" "kc$r-$i"
    step d containers rm "kc$r-$i"
  done
}
remove_leftovers() { # the tasks and containers a killed round left
  local t c
  for t in $("${CTR[@]}" tasks ls -q); do
    with_retry "${CTR[@]}" tasks delete -f "$t" || fail "round $round: ctr tasks delete -f $t"
  done
  for c in $("${CTR[@]}" containers ls -q); do
    with_retry "${CTR[@]}" containers rm "$c" || fail "round $round: ctr containers rm $c"
  done
}
run_start=$(date +%s)
for round in 1 2 3 4 5 6; do
  workload "$round" >"$T/workload" &
  wl=$!
  sleep "$((RANDOM % 3)).$((RANDOM % 10))"
  if [ "$round" -le 3 ]; then
    victim=ovl2-snapshotter; kill -9 "$SNAP_PID"; wait "$SNAP_PID" 2>/dev/null || true
    check_only_crash_leftovers "round $round: ovl2 check right after SIGKILL of the service"
    start_snapshotter
  else
    victim=containerd; kill -9 "$CTRD_PID"; wait "$CTRD_PID" 2>/dev/null || true
    start_containerd
  fi
  wait "$wl"
  echo "  (round $round: $victim killed; steps $(cat "$T/workload"))"
  with_retry "${SN[@]}" ls
  for key in $("${SN[@]}" ls | tail -n +2 | awk '{print $1}'); do
    "${SN[@]}" info "$key" >/dev/null || fail "round $round ($victim killed): ctr snapshots info $key"
  done
  expect_eq "round $round ($victim killed): the image's committed snapshots" "$COMMITTED" "$(committed)"
  ovl2 check >/dev/null || fail "round $round ($victim killed): ovl2 check: $(ovl2 check)"
  remove_leftovers
  expect_eq "round $round ($victim killed): mounts of the home once the containers are gone" "" "$(mounts_of_home)"
  out=$("${CTR[@]}" run --rm --snapshotter ovl2 "$IMG" "after$round" sh -c 'cat /data/a.txt; ls /old; find /many -type f | wc -l')
  expect_eq "round $round ($victim killed): merged view" "hello from layer 2
new.txt
2000" "$out"
  expect_eq "round $round ($victim killed): mounts of the home after ctr run --rm" "" "$(mounts_of_home)"
  ovl2 check >/dev/null || fail "round $round ($victim killed): ovl2 check after cleanup: $(ovl2 check)"
done
echo "  (6 run rounds: $(($(date +%s) - run_start)) s)"
"${CTR[@]}" images rm --sync "$IMG" >/dev/null
for lease in $("${CTR[@]}" leases ls -q); do "${CTR[@]}" leases rm --sync "$lease" >/dev/null; done
assert_store_empty_and_clean "after the run rounds and ctr images rm --sync"
pass "6 rounds of SIGKILL (service, containerd) during ctr run and container create/rm: snapshots survive, ctr run works, no mount left, the store ends clean"

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
