#!/usr/bin/env python3
"""Builds OCI image layout tars for the containerd tests of ovl2-snapshotter, locally (no registry).

    mkimage.py basic OUT.tar NAME    busybox rootfs; a layer adding files and a dir /keep owned by
                                     42:43 with mode 0700; a layer deleting one (whiteout) and
                                     replacing a directory (opaque); a layer of 2,000
                                     files owned by 1234:5678 with mode 0640 plus /keep/k.txt
                                     without an entry for /keep (the unpacker must take /keep's
                                     owner and mode from the layers below).
    mkimage.py deep OUT.tar NAME N   busybox rootfs plus N-1 layers, layer i adding /l/i: N layers.
    mkimage.py edge OUT.tar NAME     the layer shapes containerd's unpack into an upperdir meets
                                     beyond basic's: a whiteout of a directory, whiteouts and an
                                     opaque dir owned by another user, entries whose parent dir is
                                     only in a lower layer (attributes and xattrs come from there),
                                     a hard link within a layer, a file replacing a directory.
"""

import hashlib
import io
import json
import os
import sys
import tarfile

BUSYBOX = "/bin/busybox"
APPLETS = ["sh", "cat", "ls", "find", "stat", "wc", "test", "echo", "sort", "head", "id", "readlink", "true", "sleep"]


def entry(tf, name, kind="file", data=b"", mode=0o644, uid=0, gid=0, target="", xattrs=None):
    ti = tarfile.TarInfo(name)
    ti.uid, ti.gid, ti.mode, ti.mtime = uid, gid, mode, 1700000000
    if xattrs:
        ti.pax_headers = {"SCHILY.xattr." + k: v for k, v in xattrs.items()}
    if kind == "dir":
        ti.type = tarfile.DIRTYPE
        ti.mode = mode if mode != 0o644 else 0o755
        tf.addfile(ti)
    elif kind == "hardlink":
        ti.type, ti.linkname = tarfile.LNKTYPE, target
        tf.addfile(ti)
    elif kind == "symlink":
        ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, target, 0o777
        tf.addfile(ti)
    else:
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))


def layer(build):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        build(tf)
    return buf.getvalue()


def base(tf):
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "data", "old"]:
        entry(tf, d, "dir", mode=0o1777 if d == "tmp" else 0o755)
    with open(BUSYBOX, "rb") as f:
        entry(tf, "bin/busybox", data=f.read(), mode=0o755)
    for a in APPLETS:
        entry(tf, "bin/" + a, "symlink", target="busybox")
    entry(tf, "etc/passwd", data=b"root:x:0:0:root:/:/bin/sh\n")
    entry(tf, "etc/group", data=b"root:x:0:\n")
    entry(tf, "data/base.txt", data=b"from the base layer\n")
    entry(tf, "old/gone.txt", data=b"replaced by an opaque dir\n")


def adds(tf):
    entry(tf, "data", "dir")
    entry(tf, "data/a.txt", data=b"hello from layer 2\n")
    entry(tf, "data/del.txt", data=b"deleted in layer 3\n")
    entry(tf, "keep", "dir", uid=42, gid=43, mode=0o700)


def deletes(tf):
    entry(tf, "data", "dir")
    entry(tf, "data/.wh.del.txt")
    entry(tf, "old", "dir")
    entry(tf, "old/.wh..wh..opq")
    entry(tf, "old/new.txt", data=b"opaque replacement\n")


def many(tf):
    entry(tf, "many", "dir", uid=1234, gid=5678, mode=0o750)
    for i in range(2000):
        entry(tf, "many/f%04d" % i, data=b"%d\n" % i, mode=0o640, uid=1234, gid=5678)
    entry(tf, "keep/k.txt", data=b"kept\n")


def edge_lower(tf):
    entry(tf, "keep", "dir", mode=0o710, uid=42, gid=43, xattrs={"user.ovl2test": "kept"})
    entry(tf, "keep/a", data=b"a\n")
    entry(tf, "gone", "dir")
    entry(tf, "gone/sub", "dir")
    entry(tf, "gone/sub/f", data=b"f\n")
    entry(tf, "swap", "dir")
    entry(tf, "swap/f", data=b"f\n")
    entry(tf, "op", "dir", uid=7, gid=7)
    entry(tf, "op/old", data=b"old\n")


def edge_upper(tf):
    # No entry for keep/: containerd makes it in the upperdir with the lower layer's attributes.
    entry(tf, "keep/b", data=b"b\n")
    entry(tf, "keep/.wh.a", uid=1000, gid=1000)
    entry(tf, ".wh.gone")
    entry(tf, ".wh.swap")
    entry(tf, "swap", data=b"now a file\n")
    entry(tf, "op/.wh..wh..opq", uid=7, gid=7)
    entry(tf, "op/new", data=b"new\n")
    entry(tf, "op/link", "hardlink", target="op/new")


def blob(blobs, data):
    d = hashlib.sha256(data).hexdigest()
    blobs["sha256:" + d] = data
    return "sha256:" + d


def write_image(out, name, layers):
    blobs = {}
    descs, diff_ids = [], []
    for data in layers:
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob(blobs, data), "size": len(data)})
        diff_ids.append(descs[-1]["digest"])
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode()
    cdesc = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(blobs, config), "size": len(config)}
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": cdesc, "layers": descs}).encode()
    mdesc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": blob(blobs, manifest),
             "size": len(manifest), "annotations": {"io.containerd.image.name": name,
                                                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}
    index = json.dumps({"schemaVersion": 2, "manifests": [mdesc]}).encode()
    with tarfile.open(out, "w") as tf:
        def add(n, data):
            ti = tarfile.TarInfo(n)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1700000000
            tf.addfile(ti, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for d, data in blobs.items():
            add("blobs/sha256/" + d.split(":")[1], data)


def main():
    kind, out, name = sys.argv[1:4]
    if kind == "basic":
        write_image(out, name, [layer(base), layer(adds), layer(deletes), layer(many)])
    elif kind == "edge":
        write_image(out, name, [layer(base), layer(edge_lower), layer(edge_upper)])
    elif kind == "deep":
        n = int(sys.argv[4])
        layers = [layer(base)]
        for i in range(1, n):
            layers.append(layer(lambda tf, i=i: (entry(tf, "l", "dir"), entry(tf, "l/%d" % i, data=b"%d\n" % i))))
        write_image(out, name, layers)
    else:
        sys.exit("unknown image kind " + kind)


if __name__ == "__main__":
    main()
