//go:build linux

package ovl2_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/ovl2/ovl2/ovl2-go"
)

func open(t *testing.T, opts ...ovl2.Option) (*ovl2.Driver, string) {
	t.Helper()
	home := filepath.Join(t.TempDir(), "store")
	d, err := ovl2.Open(home, append([]ovl2.Option{ovl2.WithSync(false)}, opts...)...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d, home
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// wantErr checks err against a sentinel, an errno, and the *Error fields.
func wantErr(t *testing.T, err error, sentinel error, errno syscall.Errno, op, id string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("got %v, want %v", err, sentinel)
	}
	if errno != 0 && !errors.Is(err, errno) {
		t.Fatalf("%v does not unwrap to %v", err, errno)
	}
	var e *ovl2.Error
	if !errors.As(err, &e) {
		t.Fatalf("%v is not an *ovl2.Error", err)
	}
	if e.Op != op || e.ID != id || e.Message == "" {
		t.Fatalf("error fields: op %q id %q message %q; want op %q id %q", e.Op, e.ID, e.Message, op, id)
	}
	for _, other := range []error{ovl2.ErrNotFound, ovl2.ErrExists, ovl2.ErrBusy, ovl2.ErrMaxDepth, ovl2.ErrInvalidArgument} {
		if other != sentinel && errors.Is(err, other) {
			t.Fatalf("%v also matches %v", err, other)
		}
	}
}

func TestVersion(t *testing.T) {
	v := ovl2.Version()
	if v == "" || strings.Count(v, ".") != 2 {
		t.Fatalf("Version() = %q", v)
	}
	if ovl2.CodeNotFound.String() != "NOT_FOUND" || ovl2.Code(99).String() != "UNKNOWN" {
		t.Fatalf("Code names: %s %s", ovl2.CodeNotFound, ovl2.Code(99))
	}
}

func TestOpenOptions(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{0, 501, -1} {
		_, err := ovl2.Open(filepath.Join(dir, "s"), ovl2.WithMaxDepth(n))
		wantErr(t, err, ovl2.ErrInvalidArgument, syscall.EINVAL, "open", "")
	}
	d, err := ovl2.Open(filepath.Join(dir, "s"), ovl2.WithMaxDepth(ovl2.DockerMaxDepth), ovl2.WithRepairOnOpen(false),
		ovl2.WithRoot(uint32(os.Geteuid()), uint32(os.Getegid())))
	must(t, err)
	defer d.Close()
	st, err := d.Status()
	must(t, err)
	if !hasPair(st, "Max depth", "128") || !hasPair(st, "Home", filepath.Join(dir, "s")) {
		t.Fatalf("status does not reflect options: %v", st)
	}
	if d.Home() != filepath.Join(dir, "s") {
		t.Fatalf("Home() = %q", d.Home())
	}

	file := filepath.Join(dir, "file")
	must(t, os.WriteFile(file, nil, 0o600))
	_, err = ovl2.Open(file)
	var e *ovl2.Error
	if !errors.As(err, &e) || e.Errno == 0 {
		t.Fatalf("opening a file as a store: %v", err)
	}
}

func TestOpenModes(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "s")
	for _, m := range []ovl2.OpenMode{ovl2.OpenExisting, ovl2.OpenReadOnly} {
		_, err := ovl2.Open(home, ovl2.WithOpenMode(m))
		wantErr(t, err, ovl2.ErrNotFound, syscall.ENOENT, "open", "")
		if _, err := os.Stat(home); !os.IsNotExist(err) {
			t.Fatalf("mode %d created the store", m)
		}
	}
	d, err := ovl2.Open(home, ovl2.WithOpenMode(ovl2.OpenCreate))
	must(t, err)
	must(t, d.Create("base", "", nil))
	must(t, d.Close())
	ro, err := ovl2.Open(home, ovl2.WithOpenMode(ovl2.OpenReadOnly))
	must(t, err)
	defer ro.Close()
	layers, err := ro.Layers()
	must(t, err)
	if len(layers) != 1 {
		t.Fatalf("layers: %v", layers)
	}
	wantErr(t, ro.Create("x", "", nil), ovl2.ErrPermission, syscall.EROFS, "create", "x")

	// A directory that is not a store is refused, whatever the mode, and left alone.
	other := filepath.Join(dir, "other")
	must(t, os.Mkdir(other, 0o755))
	must(t, os.WriteFile(filepath.Join(other, "f"), nil, 0o600))
	_, err = ovl2.Open(other)
	wantErr(t, err, ovl2.ErrInvalidArgument, syscall.EINVAL, "open", "")
	if _, err := os.Stat(filepath.Join(other, "l")); !os.IsNotExist(err) {
		t.Fatal("open made l/ in a directory that is not a store")
	}
}

func hasPair(st [][2]string, k, v string) bool {
	for _, p := range st {
		if p[0] == k {
			return p[1] == v
		}
	}
	return false
}

func TestLayerLifecycle(t *testing.T) {
	d, home := open(t)
	must(t, d.Create("base", "", nil))
	must(t, d.Create("mid", "base", &ovl2.CreateOpts{MountLabel: "system_u:object_r:container_file_t:s0"}))
	must(t, d.CreateReadWrite("top", "mid", nil))

	wantErr(t, d.Create("base", "", nil), ovl2.ErrExists, syscall.EEXIST, "create", "base")
	if err := d.CreateReadWrite("top", "mid", nil); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("create_rw existing: %v is not fs.ErrExist", err)
	}
	wantErr(t, d.Create("orphan", "nope", nil), ovl2.ErrNotFound, syscall.ENOENT, "create", "orphan")
	wantErr(t, d.Create("../x", "", nil), ovl2.ErrInvalidArgument, syscall.EINVAL, "create", "../x")
	wantErr(t, d.Create("", "", nil), ovl2.ErrInvalidArgument, syscall.EINVAL, "create", "")
	wantErr(t, d.Create("nul\x00id", "", nil), ovl2.ErrInvalidArgument, syscall.EINVAL, "create", "nul\x00id")
	wantErr(t, d.Create("x", "ba\x00se", nil), ovl2.ErrInvalidArgument, syscall.EINVAL, "create", "x")
	wantErr(t, d.Create("x", "", &ovl2.CreateOpts{MountLabel: "a\x00b"}), ovl2.ErrInvalidArgument, syscall.EINVAL, "create", "x")
	wantErr(t, d.Create("x", "", &ovl2.CreateOpts{StorageOpt: map[string]string{"k\x00": "v"}}),
		ovl2.ErrInvalidArgument, syscall.EINVAL, "create", "x")
	wantErr(t, d.Create("x", "", &ovl2.CreateOpts{StorageOpt: map[string]string{"=": ""}}),
		ovl2.ErrInvalidArgument, syscall.EINVAL, "create", "x")
	_, err := ovl2.Open(home + "\x00evil")
	wantErr(t, err, ovl2.ErrInvalidArgument, syscall.EINVAL, "open", "")
	wantErr(t, d.Create("s", "", &ovl2.CreateOpts{StorageOpt: map[string]string{"size": "10G"}}),
		ovl2.ErrUnsupported, syscall.EOPNOTSUPP, "create", "s")
	wantErr(t, d.Create("s", "", &ovl2.CreateOpts{StorageOpt: map[string]string{"colour": "blue", "b": "1"}}),
		ovl2.ErrInvalidArgument, syscall.EINVAL, "create", "s")

	for id, want := range map[string]bool{"base": true, "top": true, "orphan": false, "s": false} {
		got, err := d.Exists(id)
		must(t, err)
		if got != want {
			t.Errorf("Exists(%q) = %v", id, got)
		}
	}
	_, err = d.Exists("a/b")
	wantErr(t, err, ovl2.ErrInvalidArgument, syscall.EINVAL, "exists", "a/b")

	if p, err := d.Parent("top"); err != nil || p != "mid" {
		t.Fatalf("Parent(top) = %q, %v", p, err)
	}
	if p, err := d.Parent("base"); err != nil || p != "" {
		t.Fatalf("Parent(base) = %q, %v", p, err)
	}
	_, err = d.Parent("nope")
	wantErr(t, err, ovl2.ErrNotFound, syscall.ENOENT, "parent", "nope")
	if _, err := d.Parent("nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%v is not fs.ErrNotExist", err)
	}

	m, err := d.Metadata("top")
	must(t, err)
	want := ovl2.Metadata{
		LowerDir:  filepath.Join(home, "mid", "diff") + ":" + filepath.Join(home, "base", "diff"),
		UpperDir:  filepath.Join(home, "top", "diff"),
		WorkDir:   filepath.Join(home, "top", "work"),
		MergedDir: filepath.Join(home, "top", "merged"),
	}
	if m != want {
		t.Fatalf("Metadata(top) = %+v, want %+v", m, want)
	}
	if mm := m.Map(); len(mm) != 4 || mm["LowerDir"] != want.LowerDir {
		t.Fatalf("Map() = %v", mm)
	}
	mb, err := d.Metadata("base")
	must(t, err)
	if _, ok := mb.Map()["LowerDir"]; ok || mb.LowerDir != "" {
		t.Fatalf("base has a LowerDir: %+v", mb)
	}
	_, err = d.Metadata("nope")
	wantErr(t, err, ovl2.ErrNotFound, syscall.ENOENT, "metadata", "nope")

	layers, err := d.Layers()
	must(t, err)
	if len(layers) != 3 || layers[0].ID != "base" || layers[1].Parent != "base" || layers[2].Depth != 2 ||
		len(layers[2].ShortID) != 26 {
		t.Fatalf("Layers() = %+v", layers)
	}
	st, err := d.Status()
	must(t, err)
	if st[0][0] != "Backing Filesystem" || !hasPair(st, "Layers", "3") || !hasPair(st, "Supports d_type", "true") {
		t.Fatalf("Status() = %v", st)
	}

	wantErr(t, d.Remove("base"), ovl2.ErrBusy, syscall.EBUSY, "remove", "base")
	wantErr(t, d.Remove("nope"), ovl2.ErrNotFound, syscall.ENOENT, "remove", "nope")
	must(t, d.Remove("top"))
	// ForceRemove unmounts first; it never orphans a child.
	wantErr(t, d.ForceRemove("base"), ovl2.ErrBusy, syscall.EBUSY, "remove", "base")
	// Docker's Remove ignores children: mid becomes an orphan, flagged and explained.
	must(t, d.RemoveWith("base", ovl2.RemoveOpts{IgnoreChildren: true}))
	layers, err = d.Layers()
	must(t, err)
	if len(layers) != 1 || layers[0].ID != "mid" || !layers[0].Orphan || layers[0].Parent != "" || layers[0].Depth != 1 {
		t.Fatalf("Layers() with an orphan = %+v", layers)
	}
	problems, err := d.Check()
	must(t, err)
	if len(problems) != 1 || problems[0].Kind != "orphan" || problems[0].Repairable ||
		!strings.Contains(problems[0].Detail, "`ovl2 rm --recursive mid`") {
		t.Fatalf("Check() with an orphan = %+v", problems)
	}
	must(t, d.Create("leaf", "mid", nil))
	wantErr(t, d.RemoveTree("nope", false), ovl2.ErrNotFound, syscall.ENOENT, "remove_tree", "nope")
	must(t, d.RemoveTree("mid", false))
	if layers, err := d.Layers(); err != nil || len(layers) != 0 {
		t.Fatalf("after removing all: %v %v", layers, err)
	}
}

func TestMaxDepth(t *testing.T) {
	// Docker's rule: a layer may have max-depth lowers, so c (2 lowers) fits and d does not.
	d, _ := open(t, ovl2.WithMaxDepth(2))
	must(t, d.Create("a", "", nil))
	must(t, d.Create("b", "a", nil))
	must(t, d.Create("c", "b", nil))
	err := d.Create("d", "c", nil)
	wantErr(t, err, ovl2.ErrMaxDepth, syscall.ETOOMANYREFS, "create", "d")
	if !strings.Contains(err.Error(), "would have 3 lower layers, the limit is 2") {
		t.Errorf("message %q does not count lowers", err)
	}
	wantErr(t, d.CreateReadWrite("d", "c", nil), ovl2.ErrMaxDepth, syscall.ETOOMANYREFS, "create_rw", "d")
	layers, err := d.Layers()
	must(t, err)
	for _, l := range layers {
		if want := map[string]int{"a": 0, "b": 1, "c": 2}[l.ID]; l.Depth != want {
			t.Errorf("layer %s depth %d, want %d", l.ID, l.Depth, want)
		}
	}
}

func TestCheckRepairAndCorrupt(t *testing.T) {
	d, home := open(t)
	must(t, d.Create("base", "", nil))
	must(t, d.Create("child", "base", nil))
	if ps, err := d.Check(); err != nil || len(ps) != 0 {
		t.Fatalf("clean store: %v %v", ps, err)
	}
	link, err := os.ReadFile(filepath.Join(home, "child", "link"))
	must(t, err)
	must(t, os.Remove(filepath.Join(home, "l", string(link))))
	ps, err := d.Check()
	must(t, err)
	found := false
	for _, p := range ps {
		if p.Kind == "missing_short_link" && p.Layer == "child" && p.Repairable && p.Detail != "" {
			found = true
		}
	}
	if !found {
		t.Fatalf("Check() = %+v", ps)
	}
	r, err := d.Repair()
	must(t, err)
	if len(r.Repaired) == 0 || len(r.Remaining) != 0 {
		t.Fatalf("Repair() = %+v", r)
	}
	if _, err := os.Readlink(filepath.Join(home, "l", string(link))); err != nil {
		t.Fatalf("repair did not restore the link: %v", err)
	}

	must(t, os.WriteFile(filepath.Join(home, "child", "lower"), []byte("garbage"), 0o644))
	_, err = d.Metadata("child")
	wantErr(t, err, ovl2.ErrCorrupt, syscall.EUCLEAN, "metadata", "child")
	_, err = d.Parent("child")
	wantErr(t, err, ovl2.ErrCorrupt, syscall.EUCLEAN, "parent", "child")
}

// Many goroutines share one Driver; each provokes its own errors, which must come back
// to that goroutine naming its own layer even though goroutines move between threads.
func TestConcurrentGoroutines(t *testing.T) {
	d, _ := open(t)
	const workers, rounds = 32, 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			errs <- func() error {
				for r := 0; r < rounds; r++ {
					base := fmt.Sprintf("g%d-r%d", w, r)
					child := base + "-c"
					if err := d.Create(base, "", nil); err != nil {
						return err
					}
					if err := d.CreateReadWrite(child, base, nil); err != nil {
						return err
					}
					err := d.Create(child, base, nil)
					var e *ovl2.Error
					if !errors.As(err, &e) || e.Code != ovl2.CodeExists || e.ID != child || !strings.Contains(e.Message, child) {
						return fmt.Errorf("duplicate create of %s: got %v", child, err)
					}
					if p, err := d.Parent(child); err != nil || p != base {
						return fmt.Errorf("Parent(%s) = %q, %v", child, p, err)
					}
					if _, err := d.Metadata(child); err != nil {
						return err
					}
					if err := d.Remove(base); !errors.Is(err, ovl2.ErrBusy) {
						return fmt.Errorf("remove %s with a child: %v", base, err)
					}
					if _, err := d.Layers(); err != nil {
						return err
					}
					if err := d.Remove(child); err != nil {
						return err
					}
					if err := d.Remove(base); err != nil {
						return err
					}
				}
				return nil
			}()
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if ls, err := d.Layers(); err != nil || len(ls) != 0 {
		t.Fatalf("left behind: %v %v", ls, err)
	}
	if ps, err := d.Check(); err != nil || len(ps) != 0 {
		t.Fatalf("store unsound after concurrent use: %v %v", ps, err)
	}
}

func TestClose(t *testing.T) {
	d, _ := open(t)
	must(t, d.Create("a", "", nil))
	// Close while other goroutines are calling: calls either finish or get ErrClosed.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				if _, err := d.Exists("a"); err != nil && !errors.Is(err, ovl2.ErrClosed) {
					t.Error(err)
				}
			}
		}()
	}
	must(t, d.Close())
	wg.Wait()
	must(t, d.Close())
	if _, err := d.Exists("a"); !errors.Is(err, ovl2.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if err := d.Create("b", "", nil); !errors.Is(err, ovl2.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if _, err := d.Layers(); !errors.Is(err, ovl2.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if d.Home() != "" {
		t.Fatalf("Home after Close = %q", d.Home())
	}
}

// Issue 10, item 10: Go strings are bytes, so a home that is not UTF-8 goes to C and comes
// back (Home, Metadata, Get) byte for byte.
func TestNonUTF8Home(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h\xff\xfeome")
	d, err := ovl2.Open(home, ovl2.WithSync(false))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer d.Close()
	if d.Home() != home {
		t.Fatalf("Home() = %q, want %q", d.Home(), home)
	}
	must(t, d.Create("base", "", nil))
	must(t, d.CreateReadWrite("ctr", "base", nil))
	m, err := d.Metadata("ctr")
	must(t, err)
	want := ovl2.Metadata{LowerDir: home + "/base/diff", UpperDir: home + "/ctr/diff", WorkDir: home + "/ctr/work",
		MergedDir: home + "/ctr/merged"}
	if m != want {
		t.Fatalf("Metadata = %q, want %q", m, want)
	}
	if st, err := os.Stat(m.UpperDir); err != nil || !st.IsDir() {
		t.Fatalf("UpperDir does not name the directory: %v", err)
	}
	p, err := d.Get("base", "")
	must(t, err)
	if p != home+"/base/diff" {
		t.Fatalf("Get = %q, want %q", p, home+"/base/diff")
	}
	must(t, d.Put("base"))
}
