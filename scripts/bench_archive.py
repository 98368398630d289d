"""Driver for scripts/bench-archive.sh (see there). Prints a Markdown table."""
import os, shutil, statistics, subprocess, sys, tarfile, io, time, resource, glob

OVL2 = os.environ["OVL2"]
BASE = os.environ["BENCH_DIR"]
RUNS = int(os.environ["RUNS"])
shutil.rmtree(BASE, ignore_errors=True)
os.makedirs(BASE)
HOME = os.path.join(BASE, "home")
env = dict(os.environ, OVL2_HOME=HOME)
seq = [0]


def sh(*cmd, stdout=subprocess.DEVNULL, **kw):
    subprocess.run(cmd, check=True, stdout=stdout, env=env, **kw)


CPU = []  # (ovl2-or-baseline measurement list, cpu seconds) recorded by timed()


def timed(fn):
    """Wall seconds of fn; its processes' CPU time (user + sys of every child it waited
    for) goes to CPU[-1], which does not grow with other load on the machine as wall does."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[-1].append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return wall


def fresh_layer(parent=None):
    seq[0] += 1
    lid = f"b{seq[0]}"
    sh(OVL2, "create", lid, *(["--parent", parent] if parent else []))
    return lid


def fresh_dir():
    seq[0] += 1
    d = os.path.join(BASE, f"t{seq[0]}")
    os.makedirs(d)
    return d


def cleanup():
    # Keep the store small so store-open cost stays constant.
    for d in glob.glob(os.path.join(BASE, "t*")):
        shutil.rmtree(d)
    sh(OVL2, "check", "--repair")


def make_inputs():
    inputs = []
    # Large real trees: Rust's std HTML docs and the Python standard library.
    trees = os.environ.get("BENCH_TREES") or ":".join(
        sorted(glob.glob(os.path.expanduser("~/.rustup/toolchains/*/share/doc/rust/html/std")))[:1]
        + [p for p in ["/usr/lib/python3.11"] if os.path.isdir(p)]
    )
    for i, src in enumerate(t for t in trees.split(":") if t):
        p = os.path.join(BASE, f"real{i}.tar")
        sh("tar", "-C", os.path.dirname(src), "-cf", p, os.path.basename(src))
        inputs.append((f"`{src}`", p))
    # 10,000 small files in 100 directories.
    tree = os.path.join(BASE, "small-src")
    for i in range(100):
        d = os.path.join(tree, f"d{i:03}")
        os.makedirs(d)
        for j in range(100):
            with open(os.path.join(d, f"f{j:03}"), "wb") as f:
                f.write(os.urandom(64 + (i * j) % 2048))
    p = os.path.join(BASE, "small.tar")
    sh("tar", "-C", tree, "-cf", p, ".")
    inputs.append(("10,000 small files", p))
    for _, p in inputs:
        subprocess.run(["cat", p], stdout=subprocess.DEVNULL, check=True)
    return inputs


def count(p):
    with tarfile.open(p) as t:
        return sum(1 for _ in t)


def cpu_medians(co, cg):
    LAST_CPU[:] = [statistics.median(co), statistics.median(cg)]


LAST_CPU = [0.0, 0.0]


def bench_apply(path, sync, hashed=False):
    ovl, gnu = [], []
    co, cg = [], []
    lid = d = None
    for _ in range(RUNS):
        # Keep the disk from filling: only the last pair survives (for the diff benchmark).
        if lid:
            sh(OVL2, "rm", lid)
            shutil.rmtree(d)
        lid = fresh_layer()
        args = [OVL2, "apply", lid, path] + ([] if sync else ["--no-sync"])
        CPU.append(co)
        ovl.append(timed(lambda: sh(*args)))
        CPU.append(cg)
        d = fresh_dir()
        if sync:
            gnu.append(timed(lambda: (sh("tar", "-xpf", path, "-C", d), sh("sync", "-f", d))))
        elif hashed:
            # Equal work: Docker's layer store hashes every layer it applies (the DiffID);
            # openssl uses the CPU's SHA instructions, as ovl2 does.
            gnu.append(timed(lambda: (sh("tar", "-xpf", path, "-C", d), sh("openssl", "dgst", "-sha256", path))))
        else:
            gnu.append(timed(lambda: sh("tar", "-xpf", path, "-C", d)))
    cpu_medians(co, cg)
    return statistics.median(ovl), statistics.median(gnu), lid, d


def bench_diff(lid, d, extra="", sink="cat"):
    ovl, gnu = [], []
    co, cg = [], []
    for _ in range(RUNS):
        # Both through a pipe: GNU tar skips reading file data when writing to /dev/null.
        CPU.append(co)
        ovl.append(timed(lambda: subprocess.run(f"{OVL2} diff {extra} {lid} 2>/dev/null | cat >/dev/null", shell=True, check=True, env=env)))
        CPU.append(cg)
        gnu.append(timed(lambda: subprocess.run(f"tar -C {d} -cf - . | {sink} >/dev/null", shell=True, check=True)))
    cpu_medians(co, cg)
    return statistics.median(ovl), statistics.median(gnu)


def bench_changes():
    src = os.path.join(BASE, "small.tar")
    lower = fresh_layer()
    sh(OVL2, "apply", "--no-sync", lower, src)
    upper = fresh_layer(lower)
    # An upper of 10,000 files: half new, half replacing files of the lower.
    tree = os.path.join(BASE, "upper-src")
    for i in range(100):
        d = os.path.join(tree, f"d{i:03}")
        os.makedirs(d)
        for j in range(100):
            name = f"f{j:03}" if j % 2 == 0 else f"n{j:03}"
            with open(os.path.join(d, name), "wb") as f:
                f.write(b"x" * (j + 1))
    p = os.path.join(BASE, "upper.tar")
    sh("tar", "-C", tree, "-cf", p, ".")
    sh(OVL2, "apply", "--no-sync", upper, p)
    times = []
    CPU.append([])
    for _ in range(RUNS):
        times.append(timed(lambda: sh(OVL2, "changes", upper)))
    n = subprocess.run([OVL2, "changes", upper], check=True, env=env, capture_output=True).stdout.count(b"\n")
    return statistics.median(times), n


def bench_rss():
    """Peak RSS of ovl2 applying a 1 GiB layer streamed through a pipe."""
    lid = fresh_layer()
    gen = subprocess.Popen([sys.executable, "-c", GEN], stdout=subprocess.PIPE)
    p = subprocess.Popen([OVL2, "apply", "--no-sync", lid, "-"], stdin=gen.stdout, stdout=subprocess.DEVNULL, env=env)
    gen.stdout.close()
    _, status, ru = os.wait4(p.pid, 0)
    gen.wait()
    assert status == 0, status
    sh(OVL2, "rm", lid)
    return ru.ru_maxrss


GEN = r"""
import sys, tarfile, io
class Zero(io.RawIOBase):
    def __init__(s, n): s.n = n
    def readinto(s, b):
        k = min(len(b), s.n); b[:k] = bytes(k); s.n -= k; return k
t = tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.PAX_FORMAT)
for i in range(64):
    ti = tarfile.TarInfo(f"big/f{i:02}"); ti.size = 16 << 20
    t.addfile(ti, Zero(ti.size))
t.close()
"""


def main():
    rows = []
    inputs = make_inputs()
    for name, path in inputs:
        n = count(path)
        mb = os.path.getsize(path) / 2**20
        o, g, lid, d = bench_apply(path, sync=False)
        rows.append((f"apply, no sync: {name}, {n} entries, {mb:.0f} MiB", "`ovl2 apply --no-sync`", "`tar -xpf`", o, g, *LAST_CPU))
        oh, gh, lidh, dh = bench_apply(path, sync=False, hashed=True)
        sh(OVL2, "rm", lidh)
        shutil.rmtree(dh)
        rows.append((f"apply, no sync, equal work: {name}", "`ovl2 apply --no-sync`", "`tar -xpf` + `openssl dgst -sha256`", oh, gh, *LAST_CPU))
        o2, g2, lid2, d2 = bench_apply(path, sync=True)
        sh(OVL2, "rm", lid2)
        shutil.rmtree(d2)
        rows.append((f"apply, synced: {name}", "`ovl2 apply` (syncfs)", "`tar -xpf` + `sync -f`", o2, g2, *LAST_CPU))
        o3, g3 = bench_diff(lid, d, sink="openssl dgst -sha256")
        rows.append((f"diff (with sha256): {name}", "`ovl2 diff \\| cat`", "`tar -cf - \\| openssl dgst -sha256`", o3, g3, *LAST_CPU))
        o4, g4 = bench_diff(lid, d, "--no-digest")
        rows.append((f"diff (no digest): {name}", "`ovl2 diff --no-digest \\| cat`", "`tar -cf - \\| cat`", o4, g4, *LAST_CPU))
        cleanup()
    print("| Measurement | ovl2 | baseline | ovl2 wall (ms) | baseline wall (ms) | wall ratio | ovl2 CPU (ms) | baseline CPU (ms) | CPU ratio |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for what, a, b, o, g, c1, c2 in rows:
        print(f"| {what} | {a} | {b} | {o*1000:.1f} | {g*1000:.1f} | {o/g:.2f} | {c1*1000:.1f} | {c2*1000:.1f} | {c1/c2:.2f} |")
    t, n = bench_changes()
    print(f"\n`ovl2 changes` of a 10,000-file upper over a 10,000-file lower ({n} changes): "
          f"{t*1000:.1f} ms (whole process, median of {RUNS})")
    rss = bench_rss()
    print(f"\nPeak RSS of `ovl2 apply` streaming a 1 GiB layer from a pipe: {rss/1024:.1f} MiB")


main()
