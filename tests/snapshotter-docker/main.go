// Command dockerdriver opens a store that ovl2-snapshotter filled for containerd with Docker's
// own overlay2 graph driver (github.com/docker/docker/daemon/graphdriver/overlay2, the code
// dockerd runs), so tests/snapshotter/containerd.sh can check that containerd's layers are
// Docker's layers:
//
//	dockerdriver tree DIR
//	    prints DIR's tree, one line per entry (path, type, mode, owner, mtime, and size and
//	    content digest, link target or device numbers), sorted: the same printer reads
//	    containerd's view of a snapshot and Docker's mount of the same layer.
//	dockerdriver layers HOME OUT ID[:PARENT]...
//	    for each layer: Exists and GetMetadata (its diff dir), Get (Docker mounts it) writing
//	    the merged tree to OUT/ID.tree, Put, and Diff(ID, PARENT) (the layer tar Docker would
//	    push) written to OUT/ID.tar.
//	dockerdriver run HOME TOP SCRIPT
//	    makes a container the way Docker does (TOP-based "<ctr>-init", then "<ctr>"), mounts it
//	    with Get, runs `chroot MERGED /bin/sh -c SCRIPT` (stdout passed through), then Put and
//	    Remove both layers.
//
// Any failure exits 1 with the reason on stderr.
package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/docker/docker/daemon/graphdriver"
	"github.com/docker/docker/daemon/graphdriver/overlay2"
	"github.com/moby/sys/user"
	"golang.org/x/sys/unix"
)

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "dockerdriver: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	a := os.Args[1:]
	switch {
	case len(a) == 2 && a[0] == "tree":
		fmt.Print(tree(a[1]))
	case len(a) >= 3 && a[0] == "layers":
		d := open(a[1])
		defer cleanup(d)
		for _, spec := range a[3:] {
			id, parent, _ := strings.Cut(spec, ":")
			layer(d, a[1], a[2], id, parent)
		}
	case len(a) == 4 && a[0] == "run":
		d := open(a[1])
		defer cleanup(d)
		run(d, a[2], a[3])
	default:
		die("usage: tree DIR | layers HOME OUT ID[:PARENT]... | run HOME TOP SCRIPT")
	}
}

func open(home string) graphdriver.Driver {
	d, err := overlay2.Init(home, nil, user.IdentityMapping{})
	if err != nil {
		die("overlay2.Init(%s): %v", home, err)
	}
	return d
}

func cleanup(d graphdriver.Driver) {
	if err := d.Cleanup(); err != nil {
		die("driver Cleanup: %v", err)
	}
}

func layer(d graphdriver.Driver, home, out, id, parent string) {
	if !d.Exists(id) {
		die("Exists(%s) is false", id)
	}
	md, err := d.GetMetadata(id)
	if err != nil {
		die("GetMetadata(%s): %v", id, err)
	}
	if want := filepath.Join(home, id, "diff"); md["UpperDir"] != want {
		die("GetMetadata(%s): UpperDir %q, want %q", id, md["UpperDir"], want)
	}
	if (parent == "") != (md["LowerDir"] == "") {
		die("GetMetadata(%s) with parent %q: LowerDir %q", id, parent, md["LowerDir"])
	}
	p, err := d.Get(id, "")
	if err != nil {
		die("Get(%s): %v", id, err)
	}
	t := tree(p)
	if err := d.Put(id); err != nil {
		die("Put(%s): %v", id, err)
	}
	write(filepath.Join(out, id+".tree"), strings.NewReader(t))
	rc, err := d.Diff(id, parent)
	if err != nil {
		die("Diff(%s, %s): %v", id, parent, err)
	}
	write(filepath.Join(out, id+".tar"), rc)
	if err := rc.Close(); err != nil {
		die("Diff(%s, %s): %v", id, parent, err)
	}
}

func write(path string, r io.Reader) {
	f, err := os.Create(path)
	if err != nil {
		die("%v", err)
	}
	if _, err := io.Copy(f, r); err != nil {
		die("writing %s: %v", path, err)
	}
	if err := f.Close(); err != nil {
		die("writing %s: %v", path, err)
	}
}

func run(d graphdriver.Driver, top, script string) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		die("%v", err)
	}
	ctr := "ctr" + hex.EncodeToString(b)[3:]
	init := ctr + "-init"
	if err := d.CreateReadWrite(init, top, &graphdriver.CreateOpts{}); err != nil {
		die("CreateReadWrite(%s, %s): %v", init, top, err)
	}
	if err := d.CreateReadWrite(ctr, init, &graphdriver.CreateOpts{}); err != nil {
		die("CreateReadWrite(%s, %s): %v", ctr, init, err)
	}
	p, err := d.Get(ctr, "")
	if err != nil {
		die("Get(%s): %v", ctr, err)
	}
	cmd := exec.Command("chroot", p, "/bin/sh", "-c", script)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	runErr := cmd.Run()
	if err := d.Put(ctr); err != nil {
		die("Put(%s): %v", ctr, err)
	}
	for _, id := range []string{ctr, init} {
		if err := d.Remove(id); err != nil {
			die("Remove(%s): %v", id, err)
		}
	}
	if runErr != nil {
		die("chroot %s /bin/sh -c ...: %v", p, runErr)
	}
}

// tree lists root's entries with everything a container sees of them (times included: a
// merged directory shows the times of the topmost layer holding it, in any mount of the chain).
func tree(root string) string {
	var lines []string
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		line := fmt.Sprintf("%s %s %04o %d:%d mtime=%d.%09d", rel, kind(st.Mode), st.Mode&0o7777, st.Uid, st.Gid,
			st.Mtim.Sec, st.Mtim.Nsec)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %d %x", st.Size, h.Sum(nil)[:8])
		case unix.S_IFLNK:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + t
		case unix.S_IFCHR, unix.S_IFBLK:
			line += fmt.Sprintf(" dev=%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		die("walking %s: %v", root, err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

func kind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFREG:
		return "file"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFCHR:
		return "char"
	case unix.S_IFBLK:
		return "block"
	case unix.S_IFIFO:
		return "fifo"
	default:
		return "socket"
	}
}
