"""ovl2 quickstart: build an image from layer tarballs, run a container on it, export what
the container changed, clean up.

    python examples/python/quickstart.py [HOME]

HOME defaults to a fresh temporary directory, removed at the end. Mounting needs root (or a
user namespace); without it the example says so and goes on.
"""

from __future__ import annotations

import io
import sys
import tarfile
import tempfile

import ovl2


def tarball(files: dict[str, str]) -> bytes:
    """A layer tarball as a registry would serve it (uncompressed here)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main(home: str) -> None:
    print(f"ovl2 {ovl2.__version__}, store at {home}")
    with ovl2.Driver(home) as driver:
        # An image of two layers, as Docker lays them out: create each, then apply its tar.
        driver.create("base")
        stats = driver.apply_diff("base", tarball({"etc/os-release": "NAME=quickstart\n"}))
        print(f"base: {stats.files} file(s), {stats.size} bytes, DiffID {stats.digest[:19]}...")
        driver.create("app", parent="base")
        driver.apply_diff("app", tarball({"app/run.sh": "echo hello\n"}), parent="base")

        # A container layer on top.
        driver.create_rw("container", parent="app")
        for layer in driver.layers():
            print(f"  {layer.id:<10} parent={layer.parent!s:<5} depth={layer.depth}")

        # Mount it: lower layers read-only, writes land in the container's own diff.
        # Leaving the block unmounts, also on an exception.
        try:
            with driver.mounted("container") as root:
                print("container sees:", (root / "etc" / "os-release").read_text().strip())
                (root / "app" / "output.txt").write_text("written in the container\n")
        except ovl2.PermissionDeniedError as e:
            print("cannot mount here:", e.strerror)

        # What the container changed, Docker style, and the same as a layer tarball.
        for change in driver.changes("container", "app"):
            print("  ", change)
        out = io.BytesIO()
        exported = driver.diff("container", out, parent="app")
        print(f"container as a layer: {exported.tar_bytes} bytes, {exported.entries} entries")

        # Errors are typed OSErrors.
        try:
            driver.remove("base")
        except ovl2.BusyError as e:
            print("refused:", e.strerror)

        print("problems:", driver.check() or "none")
        for id in ("container", "app", "base"):
            driver.remove(id)
        assert driver.layers() == []


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory(prefix="ovl2-quickstart-") as tmp:
            main(tmp + "/store")
