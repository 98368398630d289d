#!/bin/bash
# Runs Docker's own graphdriver benchmarks (moby's daemon/graphdriver/graphtest, with the
# list and parameters moby's overlay2 tests use) for Docker's overlay2 driver and for ovl2
# (Go package over libovl2) in one `go test -bench` run, then prints ns/op for both and the
# ratio ovl2/moby (median over COUNT runs, with the min-max spread of each side).
# Needs root (both drivers mount) and Go 1.24+.
#
# Usage: scripts/bench-graphdriver.sh [go test -bench regexp]   (default: all)
#   BENCHTIME=1s COUNT=3 PROFILE=release   (environment; any COUNT >= 1)
#   RAW=file  keep the raw `go test` output there
#   BENCH_FS=disk (default)  stores under TMPDIR (default /tmp), which must not be tmpfs or
#     overlay (Docker's overlay2 refuses those backing filesystems).
#   BENCH_FS=ramext4  stores on an ext4 filesystem made in a sparse image (BENCH_FS_SIZE,
#     default 4G) on a tmpfs the script mounts under its work dir, loop-mounted: syncfs,
#     fsync and the flush on unmount cost no disk time, so the rows measure CPU and
#     filesystem work rather than the disk's writeback. Needs losetup and mkfs.ext4; all of
#     it (ext4 mount, loop device, tmpfs) is undone on exit, failure or interrupt.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
BENCHTIME=${BENCHTIME:-1s}
COUNT=${COUNT:-3}
PROFILE=${PROFILE:-release}
BENCH_FS=${BENCH_FS:-disk}
BENCH_FS_SIZE=${BENCH_FS_SIZE:-4G}
filter=${1:-.}
case $BENCH_FS in
disk | ramext4) ;;
*) echo "BENCH_FS must be disk or ramext4, not '$BENCH_FS'" >&2; exit 2 ;;
esac
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
export PATH=$HOME/.cargo/bin:$PATH

work=$(mktemp -d /tmp/ovl2-gdbench.XXXXXX)
ram=$work/ram
stores=$work/stores
loopdev=
# Undo in reverse order whatever was set up; a store left mounted by a failed benchmark is
# unmounted with the filesystem (-R), and a busy mount is detached lazily rather than kept.
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if mountpoint -q "$stores" 2>/dev/null; then
        umount -R "$stores" 2>/dev/null || umount -R -l "$stores" ||
            echo "bench-graphdriver: could not unmount $stores" >&2
    fi
    if [ -n "$loopdev" ]; then
        losetup -d "$loopdev" || echo "bench-graphdriver: could not detach $loopdev" >&2
    fi
    if mountpoint -q "$ram" 2>/dev/null; then
        umount "$ram" 2>/dev/null || umount -l "$ram" ||
            echo "bench-graphdriver: could not unmount $ram" >&2
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$BENCH_FS" = ramext4 ]; then
    mkdir "$ram" "$stores"
    # Room for the sparse image plus a margin; tmpfs takes RAM only for blocks ext4 writes.
    mount -t tmpfs -o "size=$(($(numfmt --from=iec "$BENCH_FS_SIZE") / 1048576 + 256))M,mode=0700" \
        ovl2-gdbench "$ram"
    truncate -s "$BENCH_FS_SIZE" "$ram/ext4.img"
    # Inode tables and journal initialised now, so no ext4lazyinit thread runs during the bench.
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$ram/ext4.img"
    loopdev=$(losetup -f --show "$ram/ext4.img")
    mount -t ext4 "$loopdev" "$stores"
    chmod 0700 "$stores"
    export TMPDIR=$stores
    # Keep go's own build files off the measured filesystem.
    export GOTMPDIR=$work
fi
storedir=${TMPDIR:-/tmp}
fsinfo="stores in $storedir: $(findmnt -n -o FSTYPE,SOURCE --target "$storedir" | tr -s ' ')"
if [ "$BENCH_FS" = ramext4 ]; then
    fsinfo="$fsinfo (BENCH_FS=ramext4: $BENCH_FS_SIZE sparse image on tmpfs)"
fi
prefix=$work/prefix
scripts/install-lib.sh PREFIX="$prefix" PROFILE="$PROFILE" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log" >&2; exit 1; }
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
export LD_LIBRARY_PATH=$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# Go's build cache does not key cgo packages on pkg-config's output; naming this prefix in
# the CGO_* variables (part of the key) makes it link this run's library.
export CGO_CFLAGS="-O2 -g $(pkg-config --cflags ovl2)" CGO_LDFLAGS="-O2 -g $(pkg-config --libs ovl2)"
export GOFLAGS=${GOFLAGS:--mod=mod}

cd tests/graphdriver-bench
go vet ./...
raw=${RAW:-$work/raw.txt}
echo "ovl2 $(git -C "$root" rev-parse --short HEAD), $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $fsinfo"
echo "go test -run '^\$' -timeout=0 -bench '$filter' -benchtime=$BENCHTIME -count=$COUNT"
go test -run '^$' -timeout=0 -bench "$filter" -benchtime="$BENCHTIME" -count="$COUNT" . | tee "$raw" |
    grep --line-buffered -E 'ns/op|^(FAIL|panic|ok)' >&2
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$raw" <<'PY'
import re, statistics, sys
# Goals from issue 13 (ovl2/moby).
goals = {"Exists": "≤ 0.5×", "GetEmpty": "≤ 0.5×", "DiffBase": "≤ 0.5×",
         "DiffSmallUpper": "≤ 0.2×", "Diff10KFileUpper": "≤ 0.2×",
         "Diff10KFilesBottom": "≤ 0.2×", "DiffApply100": "≤ 0.5×",
         "Diff20Layers": "≤ 0.3×", "Read20Layers": "≤ 1.02×"}
runs = {}
order = []
cur = None
for line in open(sys.argv[1]):
    # A result is "BenchmarkX/drv-P <tab> N <tab> T ns/op", but log lines the drivers print
    # can split it: take the name, then the next "N T ns/op".
    m = re.match(r"Benchmark(\w+)/(moby|ovl2|floor|stat1|stat2)(?:-\d+)?\s", line)
    if m:
        cur = (m.group(1), m.group(2))
    m = re.search(r"(?:^|\s)\d+\s+([\d.]+) ns/op", line)
    if m and cur:
        name, drv = cur
        if name not in runs:
            order.append(name)
        runs.setdefault(name, {}).setdefault(drv, []).append(float(m.group(1)))
        cur = None

def fmt(ns):
    if ns >= 1e6:
        return f"{ns/1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns/1e3:.1f} µs"
    return f"{ns:.0f} ns"

def spread(v):
    m = statistics.median(v)
    return f"±{100*max(abs(max(v)-m), abs(m-min(v)))/m:.0f}%" if len(v) > 1 else ""

both = [n for n in order if "ovl2" in runs[n] and "moby" in runs[n]]
if both:
    print()
    print("| benchmark | ovl2 ns/op | moby ns/op | ovl2/moby | goal | spread ovl2 / moby |")
    print("|---|---:|---:|---:|---|---|")
for name in both:
    r = runs[name]
    o, d = statistics.median(r["ovl2"]), statistics.median(r["moby"])
    print(f"| {name} | {o:.0f} ({fmt(o)}) | {d:.0f} ({fmt(d)}) | {o/d:.2f}× | "
          f"{goals.get(name, '')} | {spread(r['ovl2'])} / {spread(r['moby'])} |")
# Reference drivers: floor (no work: graphtest's loop and timer), stat1 (one fstatat from
# pure Go, the least a driver that asks the kernel can do), against both real drivers.
refs = [(n, ref) for n in order for ref in ("floor", "stat1", "stat2")
        if ref in runs[n] and "ovl2" in runs[n] and "moby" in runs[n]]
if refs:
    print()
    print("| benchmark | reference driver | ns/op | reference/moby | ovl2/reference | moby/reference | spread reference |")
    print("|---|---|---:|---:|---:|---:|---|")
    for name, ref in refs:
        r = runs[name]
        f = statistics.median(r[ref])
        o, d = statistics.median(r["ovl2"]), statistics.median(r["moby"])
        print(f"| {name} | {ref} | {f:.0f} ({fmt(f)}) | {f/d:.2f}× | {o/f:.2f}× | {d/f:.2f}× | "
              f"{spread(r[ref])} |")
# The floor: the same benchmark with a driver that does no work (graphtest's loop and timer).
floors = [n for n in order if "floor" in runs[n] and "ovl2" in runs[n] and "moby" in runs[n]]
if floors:
    print()
    print("| benchmark | floor ns/op | ovl2 above the floor | moby above the floor | ratio above the floor | spread floor |")
    print("|---|---:|---:|---:|---:|---|")
    for name in floors:
        r = runs[name]
        f = statistics.median(r["floor"])
        o, d = statistics.median(r["ovl2"]) - f, statistics.median(r["moby"]) - f
        ratio = f"{o/d:.2f}×" if d > 0 else "n/a"
        print(f"| {name} | {f:.0f} ({fmt(f)}) | {fmt(o)} | {fmt(d)} | {ratio} | {spread(r['floor'])} |")
PY
