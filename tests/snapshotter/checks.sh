# Sourced after containerd-env.sh by the containerd tests (containerd.sh for 1.6, containerd2.sh
# for 2.x): their assertions and their cleanup, which every check fails the script through.
: "${OVL2:?}" "${H:?}" "${T:?}"
SN=("${CTR[@]}" snapshots --snapshotter ovl2)
cleanup() {
  local rc=$?
  if [ -n "${CTRD_PID:-}" ]; then # no container may outlive the test
    for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks kill -s SIGKILL "$t" 2>/dev/null; done
    sleep 0.5
    for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks delete -f "$t" >/dev/null 2>&1; done
  fi
  stop_all
  # A shim whose task could not be deleted: only this test's, found by its unique socket path.
  for p in $(pgrep -f -- "-address $T/containerd.sock" || true); do kill -9 "$p" 2>/dev/null || true; done
  if [ $rc -ne 0 ]; then
    echo "--- snapshotter log"; tail -30 "$T/snapshotter.log"
    echo "--- containerd log"; grep -iE "error|fail" "$T/containerd.log" | tail -30
  fi
  awk -v t="$T" 'index($5, t) == 1 {print $5}' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok - $*"; PASSED=$((PASSED + 1)); }
PASSED=0
expect_eq() { # expect_eq WHAT EXPECTED ACTUAL
  [ "$2" == "$3" ] || fail "$1: expected
$2
got
$3"
}
ovl2() { "$OVL2" --home "$H" "$@"; }
mounts_of_home() { grep -F -- "$H" /proc/self/mountinfo || true; }
index_keys() { ls -A "$H/.ovl2/snapshotter/snapshots"; }
layer_count() { ovl2 ls --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
assert_store_empty_and_clean() { # after every image and container is gone
  local what=$1
  expect_eq "$what: ctr snapshots ls" "" "$("${SN[@]}" ls | tail -n +2)"
  expect_eq "$what: snapshotter index" "" "$(index_keys)"
  expect_eq "$what: ovl2 ls" "" "$(ovl2 ls)"
  expect_eq "$what: mounts of the home" "" "$(mounts_of_home)"
  ovl2 check >"$T/check.out" || fail "$what: ovl2 check is not clean: $(cat "$T/check.out")"
}
