"""ovl2 quickstart: open a store, build a small layer chain, inspect it, clean up.

    python examples/python/quickstart.py [HOME]

HOME defaults to a fresh temporary directory, removed at the end.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

import ovl2


def main(home: str) -> None:
    print(f"ovl2 {ovl2.__version__}, store at {home}")
    with ovl2.Driver(home) as driver:
        # An image of two layers and a container layer on top, as Docker lays them out.
        driver.create("base")
        driver.create("app", parent="base")
        driver.create_rw("container", parent="app")
        # Give the image some content (layer tarballs go through apply_diff once it lands).
        upper = pathlib.Path(driver.metadata("base")["UpperDir"])
        (upper / "etc").mkdir()
        (upper / "etc" / "os-release").write_text("NAME=quickstart\n")

        for layer in driver.layers():
            print(f"  {layer.id:<10} parent={layer.parent!s:<5} depth={layer.depth}")
        print("container lower dirs:", driver.metadata("container")["LowerDir"])
        print("backing filesystem:", driver.status()["Backing Filesystem"])

        # Mount the container: lower layers read-only, writes go to its own diff. Leaving
        # the block unmounts, also on an exception. Needs root (or a user namespace).
        try:
            with driver.mounted("container") as root:
                print("container sees:", (root / "etc" / "os-release").read_text().strip())
                (root / "hello.txt").write_text("written in the container\n")
            print("the write landed in:", driver.metadata("container")["UpperDir"])
        except ovl2.PermissionDeniedError as e:
            print("cannot mount here:", e.strerror)

        # Errors are typed OSErrors.
        try:
            driver.remove("base")
        except ovl2.BusyError as e:
            print("refused:", e.strerror)

        problems = driver.check()
        print("problems:", problems or "none")

        for id in ("container", "app", "base"):
            driver.remove(id)
        assert driver.layers() == []


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory(prefix="ovl2-quickstart-") as tmp:
            main(tmp + "/store")
