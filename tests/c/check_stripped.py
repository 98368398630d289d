#!/usr/bin/env python3
"""Checks installed binaries are lean: stripped, linked to a separate debug file that a
debugger finds.

    check_stripped.py [--max-mib N] FILE...

For each FILE: no .symtab and no .debug_* sections; a .gnu_debuglink naming
``.debug/<name>.debug`` beside FILE, with that file's CRC (so gdb accepts it); the debug file
holds the DWARF (.debug_info, .debug_line). With gdb installed, also that gdb, given only
FILE, resolves an ovl2 function to its source line through the link. ``--max-mib`` bounds
FILE's size. Exits non-zero naming each failed check.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zlib


def sections(path: str) -> set[str]:
    out = subprocess.run(["readelf", "-SW", path], check=True, capture_output=True, text=True).stdout
    return set(re.findall(r"^\s*\[\s*\d+\]\s+(\S+)", out, re.M))


def debuglink(path: str) -> tuple[str, int]:
    """The .gnu_debuglink section's file name and CRC-32."""
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, "link")
        subprocess.run(["objcopy", "--dump-section", f".gnu_debuglink={dump}", path, os.path.join(tmp, "copy")], check=True)
        raw = open(dump, "rb").read()
    name, _, rest = raw.partition(b"\0")
    crc = int.from_bytes(raw[-4:], "little")
    return name.decode(), crc


def gdb_line(path: str) -> str | None:
    """The source line gdb finds for some ovl2 function, or None."""
    funcs = subprocess.run(
        ["gdb", "-batch", "-nx", "-ex", "info functions ovl2", path], capture_output=True, text=True
    ).stdout
    m = re.search(r"^\d+:\s+(?:static\s+)?\S.*?\b(ovl2[\w:]*)\(", funcs, re.M)
    if not m:
        return None
    out = subprocess.run(["gdb", "-batch", "-nx", "-ex", f"info line '{m.group(1)}'", path], capture_output=True, text=True).stdout
    line = re.search(r'Line \d+ of "[^"]+\.rs"', out)
    return line.group(0) if line else None


def check(path: str, max_mib: float | None) -> list[str]:
    bad = []
    name = os.path.basename(path)
    have = sections(path)
    if ".symtab" in have:
        bad.append("has a .symtab (not stripped)")
    debug = sorted(s for s in have if s.startswith(".debug_") and s != ".debug_gdb_scripts")
    if debug:
        bad.append(f"has debug sections {debug}")
    if ".gnu_debuglink" not in have:
        return bad + ["has no .gnu_debuglink"]
    link, crc = debuglink(path)
    if link != name + ".debug":
        bad.append(f"debuglink names {link!r}, want {name + '.debug'!r}")
    dbg = os.path.join(os.path.dirname(path), ".debug", link)
    if not os.path.isfile(dbg):
        return bad + [f"debug file {dbg} is missing"]
    if zlib.crc32(open(dbg, "rb").read()) != crc:
        bad.append(f"{dbg} does not match the CRC in the debuglink")
    missing = {".debug_info", ".debug_line"} - sections(dbg)
    if missing:
        bad.append(f"{dbg} lacks {sorted(missing)}")
    if shutil.which("gdb"):
        line = gdb_line(path)
        if line is None:
            bad.append("gdb finds no source line for an ovl2 function through the debuglink")
        else:
            print(f"{name}: gdb: {line}")
    size = os.path.getsize(path)
    print(f"{name}: {size / 2**20:.1f} MiB stripped, {os.path.getsize(dbg) / 2**20:.1f} MiB in .debug/{link}")
    if max_mib is not None and size > max_mib * 2**20:
        bad.append(f"is {size / 2**20:.1f} MiB, over the {max_mib} MiB bound")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-mib", type=float)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    failed = False
    for f in args.files:
        for problem in check(os.path.realpath(f), args.max_mib):
            print(f"{f}: {problem}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
