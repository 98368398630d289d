"""Paired CPU benchmark of `ovl2 diff` against GNU tar on one tree (see docs/benchmarks.md).

    python3 scripts/bench_diff_paired.py ROUNDS TREE OVL2 [OVL2_OTHER]   (root)

Applies TREE (tarred first) as a layer with OVL2 and extracts it with `tar -xpf`, all under
$BENCH_DIR (default /dev/shm/ovl2-bench-paired), then runs ROUNDS rounds of: `ovl2 diff | cat`
for each binary given and `tar -cf - | openssl dgst -sha256`, then the same with
`--no-digest` against `tar -cf - | cat`, in an order that rotates each round. Each command's
cost is the CPU time (user + sys) of every process of its pipeline, from getrusage of the
children; a ratio is the median, over rounds, of that round's ratio, with the min-max spread.
Pairing within a round keeps a busy machine's drift out of the ratios.
"""
import os, resource, shutil, statistics, subprocess, sys

ROUNDS, TREE, BINS = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
BASE = os.environ.get("BENCH_DIR", "/dev/shm/ovl2-bench-paired")
shutil.rmtree(BASE, ignore_errors=True)
os.makedirs(BASE)
env = dict(os.environ, OVL2_HOME=os.path.join(BASE, "home"))
tarball, extracted = os.path.join(BASE, "tree.tar"), os.path.join(BASE, "x")
os.makedirs(extracted)
subprocess.run(["tar", "-C", os.path.dirname(TREE.rstrip("/")), "-cf", tarball, os.path.basename(TREE.rstrip("/"))], check=True)
subprocess.run([BINS[0], "create", "goroot"], check=True, env=env, stdout=subprocess.DEVNULL)
subprocess.run([BINS[0], "apply", "--no-sync", "goroot", tarball], check=True, env=env, stdout=subprocess.DEVNULL)
subprocess.run(["tar", "-xpf", tarball, "-C", extracted], check=True)
os.remove(tarball)


def cpu(cmd):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, shell=True, check=True, env=env)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime


def cmds(digest):
    flag = "" if digest else "--no-digest"
    sink = "openssl dgst -sha256" if digest else "cat"
    c = [(f"ovl2[{i}]", f"{b} diff {flag} goroot 2>/dev/null | cat >/dev/null") for i, b in enumerate(BINS)]
    return c + [("tar", f"tar -C {extracted} -cf - . | {sink} >/dev/null")]


for digest in (True, False):
    cs = cmds(digest)
    for _, c in cs:  # warm the page cache and the binaries
        cpu(c)
    rounds = []
    for r in range(ROUNDS):
        order = cs[r % len(cs):] + cs[: r % len(cs)]
        rounds.append({name: cpu(c) for name, c in order})
    print(f"## {'with digest (tar | openssl dgst -sha256)' if digest else 'no digest (tar | cat)'}, {ROUNDS} rounds, load {os.getloadavg()[0]:.1f}")
    names = [n for n, _ in cs]
    for n in names:
        print(f"  {n}: median CPU {statistics.median(r[n] for r in rounds) * 1000:.1f} ms")
    pairs = [(a, "tar") for a in names[:-1]] + ([("ovl2[1]", "ovl2[0]")] if len(BINS) > 1 else [])
    for a, b in pairs:
        q = sorted(r[a] / r[b] for r in rounds)
        print(f"  {a} / {b}: {statistics.median(q):.2f}x ({q[0]:.2f}-{q[-1]:.2f})")
shutil.rmtree(BASE)
