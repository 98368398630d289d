//go:build linux

package ovl2_test

// One runnable example per operation. `go test` runs each and compares its output; `go doc`
// shows them under the functions they illustrate. Mounting examples need root, as the
// package's mount tests do.

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ovl2/ovl2/ovl2-go"
)

// exampleStore opens a fresh store in a temporary directory; done closes and removes it.
func exampleStore() (d *ovl2.Driver, done func()) {
	dir, err := os.MkdirTemp("", "ovl2-example-")
	if err != nil {
		panic(err)
	}
	d, err = ovl2.Open(filepath.Join(dir, "store"))
	if err != nil {
		panic(err)
	}
	return d, func() { d.Close(); os.RemoveAll(dir) }
}

// layerTar is a layer tarball holding the given files (name -> content); a content of
// "<whiteout>" is Docker's whiteout for that name.
func layerTar(files ...[2]string) io.Reader {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		name, body := f[0], f[1]
		if body == "<whiteout>" {
			name, body = filepath.Join(filepath.Dir(name), ".wh."+filepath.Base(name)), ""
		}
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	return &buf
}

func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "ovl2-example-")
	defer os.RemoveAll(dir)

	// Creates the store when the directory is missing or empty; WithMaxDepth(DockerMaxDepth)
	// keeps every chain mountable by Docker too.
	d, err := ovl2.Open(filepath.Join(dir, "store"), ovl2.WithMaxDepth(ovl2.DockerMaxDepth))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()
	fmt.Println(d.Home() == filepath.Join(dir, "store"))

	// An existing store only, never creating one:
	_, err = ovl2.Open(filepath.Join(dir, "missing"), ovl2.WithOpenMode(ovl2.OpenExisting))
	fmt.Println(errors.Is(err, ovl2.ErrNotFound))
	// Output:
	// true
	// true
}

func ExampleDriver_Create() {
	d, done := exampleStore()
	defer done()

	fmt.Println(d.Create("base", "", nil))
	fmt.Println(d.Create("app", "base", nil))
	err := d.Create("app", "base", nil)
	fmt.Println(errors.Is(err, ovl2.ErrExists))
	// Output:
	// <nil>
	// <nil>
	// true
}

func ExampleDriver_CreateReadWrite() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("image", "", nil)
	fmt.Println(d.CreateReadWrite("container", "image", nil))
	// Output:
	// <nil>
}

func ExampleDriver_Exists() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	yes, _ := d.Exists("base")
	no, _ := d.Exists("other")
	fmt.Println(yes, no)
	// Output:
	// true false
}

func ExampleDriver_Parent() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	_ = d.Create("app", "base", nil)
	p, _ := d.Parent("app")
	b, _ := d.Parent("base")
	fmt.Printf("%q %q\n", p, b)
	// Output:
	// "base" ""
}

func ExampleDriver_Layers() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	_ = d.Create("app", "base", nil)
	layers, _ := d.Layers()
	for _, l := range layers {
		fmt.Printf("%s parent=%q depth=%d\n", l.ID, l.Parent, l.Depth)
	}
	// Output:
	// app parent="base" depth=1
	// base parent="" depth=0
}

func ExampleDriver_Metadata() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	_ = d.Create("app", "base", nil)
	m, _ := d.Metadata("app")
	rel := func(p string) string { return strings.TrimPrefix(p, d.Home()) }
	fmt.Println(rel(m.UpperDir), rel(m.WorkDir), rel(m.MergedDir))
	fmt.Println(strings.Count(m.LowerDir, ":")+1, "lower layer")
	// Output:
	// /app/diff /app/work /app/merged
	// 1 lower layer
}

func ExampleDriver_Status() {
	d, done := exampleStore()
	defer done()

	status, _ := d.Status()
	for _, kv := range status {
		if kv[0] == "Layers" {
			fmt.Println(kv[0], kv[1])
		}
	}
	// Output:
	// Layers 0
}

func ExampleDriver_ApplyDiff() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	// Any io.Reader: a plain, gzip or zstd tar, from a file, a pipe or memory.
	size, err := d.ApplyDiff("base", "", layerTar([2]string{"etc/hostname", "box\n"}))
	fmt.Println(size, err)
	// Output:
	// 4 <nil>
}

func ExampleDriver_ApplyDiffWith() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	st, _ := d.ApplyDiffStats("base", "", layerTar([2]string{"a", "1"}))

	// The same tar again, into another layer, checked against the DiffID it must have.
	_ = d.Create("copy", "", nil)
	_, err := d.ApplyDiffWith("copy", "", layerTar([2]string{"a", "1"}), &ovl2.ApplyOpts{ExpectDigest: st.Digest})
	fmt.Println(err)

	_ = d.Create("other", "", nil)
	_, err = d.ApplyDiffWith("other", "", layerTar([2]string{"a", "2"}), &ovl2.ApplyOpts{ExpectDigest: st.Digest})
	fmt.Println(errors.Is(err, ovl2.ErrCorruptArchive))
	// Output:
	// <nil>
	// true
}

func ExampleDriver_ApplyDiffContext() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a caller that gave up: nothing is applied
	_, err := d.ApplyDiffContext(ctx, "base", "", layerTar([2]string{"a", "1"}), nil)
	fmt.Println(errors.Is(err, context.Canceled))
	// Output:
	// true
}

func ExampleDriver_Diff() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	_, _ = d.ApplyDiff("base", "", layerTar([2]string{"hello.txt", "hi"}))
	rc, _ := d.Diff("base", "") // the layer as a tar, streamed
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		fmt.Println(h.Name, h.Size)
	}
	// Output:
	// hello.txt 2
}

func ExampleDriver_DiffTo() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	applied, _ := d.ApplyDiffStats("base", "", layerTar([2]string{"hello.txt", "hi"}))
	var buf bytes.Buffer
	st, _ := d.DiffTo("base", "", &buf)
	// Exporting what was applied gives back the same DiffID when the tar was Docker's.
	fmt.Println(st.TarBytes == int64(buf.Len()), strings.HasPrefix(st.Digest, "sha256:"), applied.Size)
	// Output:
	// true true 2
}

func ExampleDriver_DiffSize() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	_, _ = d.ApplyDiff("base", "", layerTar([2]string{"a", "12345"}, [2]string{"b", "678"}))
	size, _ := d.DiffSize("base", "")
	fmt.Println(size)
	// Output:
	// 8
}

func ExampleDriver_Changes() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	_, _ = d.ApplyDiff("base", "", layerTar([2]string{"keep", "1"}, [2]string{"gone", "2"}))
	_ = d.Create("app", "base", nil)
	_, _ = d.ApplyDiff("app", "base", layerTar([2]string{"new", "3"}, [2]string{"gone", "<whiteout>"}))
	changes, _ := d.Changes("app", "base")
	for _, c := range changes {
		fmt.Println(c)
	}
	// Output:
	// D /gone
	// A /new
}

func ExampleDriver_Get() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	_, _ = d.ApplyDiff("base", "", layerTar([2]string{"etc/hostname", "box\n"}))
	_ = d.CreateReadWrite("ctr", "base", nil)

	merged, err := d.Get("ctr", "") // mounts <home>/ctr/merged; every Get needs a Put
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Put("ctr")
	b, _ := os.ReadFile(filepath.Join(merged, "etc/hostname"))
	_ = os.WriteFile(filepath.Join(merged, "written"), []byte("x"), 0o644)
	_, err = os.Stat(filepath.Join(d.Home(), "ctr/diff/written")) // writes land in the layer
	fmt.Printf("%q %v\n", b, err)
	// Output:
	// "box\n" <nil>
}

func ExampleDriver_GetWith() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	_ = d.Create("app", "base", nil)
	// A read-only view of an image layer; Persistent would make the reference outlive
	// this process (released by a Put from any process).
	merged, err := d.GetWith("app", &ovl2.MountOpts{ReadOnly: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Put("app")
	err = os.WriteFile(filepath.Join(merged, "x"), nil, 0o644)
	fmt.Println(errors.Is(err, fs.ErrPermission) || strings.Contains(fmt.Sprint(err), "read-only"))
	// Output:
	// true
}

func ExampleDriver_Put() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	_ = d.Create("app", "base", nil)
	_, _ = d.Get("app", "")
	_, _ = d.Get("app", "") // a second reference to the same mount
	_ = d.Put("app")
	m, _ := d.Mounts()
	fmt.Println(len(m), m[0].Count)
	_ = d.Put("app") // the last reference unmounts
	m, _ = d.Mounts()
	fmt.Println(len(m))
	// Output:
	// 1 1
	// 0
}

func ExampleDriver_Mounts() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	_ = d.Create("app", "base", nil)
	_, _ = d.Get("app", "")
	defer d.Put("app")
	mounts, _ := d.Mounts()
	for _, m := range mounts {
		fmt.Println(m.ID, m.Count, m.Processes, m.Mounted)
	}
	// Output:
	// app 1 1 true
}

func ExampleDriver_Cleanup() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	_ = d.Create("app", "base", nil)
	_, _ = d.Get("app", "")
	fmt.Println(d.Cleanup()) // unmounts everything, whoever holds it
	mounts, _ := d.Mounts()
	fmt.Println(len(mounts))
	// Output:
	// <nil>
	// 0
}

func ExampleDriver_Remove() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	_ = d.Create("app", "base", nil)
	err := d.Remove("base") // others build on it: refused, nothing removed
	fmt.Println(errors.Is(err, ovl2.ErrBusy))
	fmt.Println(d.Remove("app"), d.Remove("base"))
	// Output:
	// true
	// <nil> <nil>
}

func ExampleDriver_RemoveTree() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	_ = d.Create("app", "base", nil)
	_ = d.CreateReadWrite("ctr", "app", nil)
	fmt.Println(d.RemoveTree("base", false)) // deepest first
	layers, _ := d.Layers()
	fmt.Println(len(layers))
	// Output:
	// <nil>
	// 0
}

func ExampleDriver_RemoveTreeIDs() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	_ = d.Create("app", "base", nil)
	_ = d.CreateReadWrite("ctr", "app", nil)
	fmt.Println(d.RemoveTreeIDs("base", false)) // deepest first
	// Output:
	// [ctr app base] <nil>
}

func ExampleDriver_ImportChain() {
	d, done := exampleStore()
	defer done()

	// An image's layer tarballs, base first, as one all-or-nothing call.
	tars := []io.Reader{
		layerTar([2]string{"etc/os-release", "demo"}),
		layerTar([2]string{"app/bin", "app"}),
		layerTar([2]string{"etc/os-release", "<whiteout>"}),
	}
	layers, err := d.ImportChain("img", "", tars, nil)
	fmt.Println(err)
	for _, l := range layers {
		fmt.Println(l.ID, l.Stats.Files, l.Stats.Whiteouts)
	}
	parent, _ := d.Parent("img")
	fmt.Println(parent)

	// A broken tarball: nothing of the chain is left.
	_, err = d.ImportChain("bad", "img", []io.Reader{layerTar(), strings.NewReader("not a tar")}, nil)
	fmt.Println(errors.Is(err, ovl2.ErrCorruptArchive))
	exists, _ := d.Exists("bad-1")
	fmt.Println(exists)
	// Output:
	// <nil>
	// img-1 1 0
	// img-2 1 0
	// img 0 1
	// img-2
	// true
	// false
}

func ExampleDriver_Usage() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	_, _ = d.ApplyDiff("base", "", layerTar([2]string{"a", "hello"}, [2]string{"b", "world"}))
	u, err := d.Usage("base")
	fmt.Println(u.Inodes, u.Bytes > 0, err) // diff/ itself and two files
	// Output:
	// 3 true <nil>
}

func ExampleDriver_RemoveWith() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	_ = d.Create("app", "base", nil)
	// Docker's graphdriver Remove: children are not checked and become orphans.
	fmt.Println(d.RemoveWith("base", ovl2.RemoveOpts{IgnoreChildren: true}))
	layers, _ := d.Layers()
	fmt.Println(layers[0].ID, layers[0].Orphan)
	// Output:
	// <nil>
	// app true
}

func ExampleDriver_CreateContainer() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("image", "", nil)
	// ctr-init with Docker's init entries (/etc/hosts, /dev/pts, ...), then ctr on it.
	fmt.Println(d.CreateContainer("ctr", "image", nil))
	p, _ := d.Parent("ctr")
	fmt.Println(p)
	_, err := os.Stat(filepath.Join(d.Home(), "ctr-init/diff/etc/hosts"))
	fmt.Println(err)
	fmt.Println(d.RemoveContainer("ctr"))
	// Output:
	// <nil>
	// ctr-init
	// <nil>
	// <nil>
}

func ExampleDriver_Check() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	problems, _ := d.Check()
	fmt.Println(len(problems))
	// Another tool removed the layer's short link:
	link, _ := os.ReadFile(filepath.Join(d.Home(), "base/link"))
	_ = os.Remove(filepath.Join(d.Home(), "l", string(link)))
	problems, _ = d.Check()
	for _, p := range problems {
		fmt.Println(p.Layer, p.Kind, p.Repairable)
	}
	// Output:
	// 0
	// base missing_short_link true
}

func ExampleDriver_Repair() {
	d, done := exampleStore()
	defer done()

	_ = d.Create("base", "", nil)
	link, _ := os.ReadFile(filepath.Join(d.Home(), "base/link"))
	_ = os.Remove(filepath.Join(d.Home(), "l", string(link)))
	r, _ := d.Repair()
	fmt.Println(len(r.Repaired), len(r.Remaining))
	problems, _ := d.Check()
	fmt.Println(len(problems))
	// Output:
	// 1 0
	// 0
}

func ExampleError() {
	d, done := exampleStore()
	defer done()

	err := d.Create("app", "missing", nil)
	var e *ovl2.Error
	if errors.As(err, &e) {
		fmt.Println(e.Op, e.Code)
	}
	// Every error matches its sentinel, its errno and the fs errors, as os errors do.
	fmt.Println(errors.Is(err, ovl2.ErrNotFound), errors.Is(err, fs.ErrNotExist))
	// Output:
	// create NOT_FOUND
	// true true
}

func ExampleDriver_Close() {
	d, done := exampleStore()
	defer done()

	fmt.Println(d.Close())
	_, err := d.Layers()
	fmt.Println(errors.Is(err, ovl2.ErrClosed))
	// Output:
	// <nil>
	// true
}
