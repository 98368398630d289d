#!/usr/bin/env bash
# Archive benchmarks: ovl2 against GNU tar, side by side in one run, reported as ratios.
#
#   scripts/bench-archive.sh [RUNS]        (root; builds ovl2 in release mode)
#
# Everything runs on the filesystem of $BENCH_DIR (default /var/tmp/ovl2-bench), inputs are
# in the page cache, and each measurement alternates ovl2 and tar so drift hits both. Times
# are medians of RUNS (default 7) runs of whole processes (ovl2's store open included).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-7}
BENCH_DIR=${BENCH_DIR:-/var/tmp/ovl2-bench}
[ "$(id -u)" = 0 ] || { echo "bench-archive: needs root (tar -xp and ovl2 keep owners)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "bench-archive: needs openssl" >&2; exit 1; }
command -v tar >/dev/null && tar --version | head -1 | grep -q GNU || { echo "bench-archive: needs GNU tar" >&2; exit 1; }
cargo build --release -q -p ovl2-cli
export OVL2=$PWD/target/release/ovl2 BENCH_DIR RUNS
exec python3 scripts/bench_archive.py
