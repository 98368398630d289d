//go:build linux

package ovl2_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/iotest"

	"example.invalid/ovl2/examples/go/ovl2"
)

type entry struct {
	name, body string
	dir        bool
}

func makeTar(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if e.dir {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		must(t, tw.WriteHeader(h))
		if !e.dir {
			_, err := tw.Write([]byte(e.body))
			must(t, err)
		}
	}
	must(t, tw.Close())
	return buf.Bytes()
}

var (
	baseEntries  = []entry{{name: "dir/", dir: true}, {name: "dir/a.txt", body: "12345"}, {name: "hello.txt", body: "hello"}}
	childEntries = []entry{{name: "dir/", dir: true}, {name: "dir/.wh.a.txt"}, {name: "hello.txt", body: "changed"}, {name: "new.txt", body: "new"}}
)

func tarNames(t *testing.T, b []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		must(t, err)
		names = append(names, h.Name)
	}
}

func TestApplyDiffChanges(t *testing.T) {
	d, home := open(t)
	must(t, d.Create("base", "", nil))
	must(t, d.Create("child", "base", nil))
	must(t, d.Create("gz", "", nil))

	size, err := d.ApplyDiff("base", "", bytes.NewReader(makeTar(t, baseEntries...)))
	must(t, err)
	if size != 10 {
		t.Fatalf("ApplyDiff size %d, want 10", size)
	}
	if ds, err := d.DiffSize("base", ""); err != nil || ds != 10 {
		t.Fatalf("DiffSize = %d, %v", ds, err)
	}

	// An *os.File is passed to the library as is; this one is gzip-compressed.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, err = zw.Write(makeTar(t, baseEntries...))
	must(t, err)
	must(t, zw.Close())
	f := filepath.Join(t.TempDir(), "base.tar.gz")
	must(t, os.WriteFile(f, gz.Bytes(), 0o644))
	file, err := os.Open(f)
	must(t, err)
	st, err := d.ApplyDiffStats("gz", "", file)
	file.Close()
	must(t, err)
	if st.Compression != ovl2.CompressionGzip || st.Size != 10 || st.Files != 2 || len(st.Digest) != 71 {
		t.Fatalf("ApplyDiffStats = %+v", st)
	}
	sum := sha256.Sum256(makeTar(t, baseEntries...))
	if st.Digest != fmt.Sprintf("sha256:%x", sum) {
		t.Fatalf("digest %s is not the sha256 of the uncompressed tar", st.Digest)
	}

	_, err = d.ApplyDiff("child", "base", bytes.NewReader(makeTar(t, childEntries...)))
	must(t, err)
	if b, _ := os.ReadFile(filepath.Join(home, "child", "diff", "hello.txt")); string(b) != "changed" {
		t.Fatalf("child hello.txt = %q", b)
	}
	changes, err := d.Changes("child", "base")
	must(t, err)
	want := map[string]ovl2.ChangeKind{"/hello.txt": ovl2.ChangeModify, "/new.txt": ovl2.ChangeAdd, "/dir/a.txt": ovl2.ChangeDelete}
	for _, c := range changes {
		if k, ok := want[c.Path]; ok && k == c.Kind {
			delete(want, c.Path)
		}
	}
	if len(want) != 0 {
		t.Fatalf("Changes = %v; missing %v", changes, want)
	}
	if changes[0].String()[1] != ' ' {
		t.Fatalf("Change.String() = %q", changes[0].String())
	}
}

func TestDiffRoundTrip(t *testing.T) {
	d, _ := open(t)
	must(t, d.Create("base", "", nil))
	must(t, d.Create("child", "base", nil))
	must(t, d.Create("child2", "base", nil))
	_, err := d.ApplyDiff("base", "", bytes.NewReader(makeTar(t, baseEntries...)))
	must(t, err)
	_, err = d.ApplyDiff("child", "base", bytes.NewReader(makeTar(t, childEntries...)))
	must(t, err)

	rc, err := d.Diff("child", "base")
	must(t, err)
	exported, err := io.ReadAll(rc)
	must(t, err)
	must(t, rc.Close())
	names := tarNames(t, exported)
	if fmt.Sprint(names) != "[dir/ dir/.wh.a.txt hello.txt new.txt]" {
		t.Fatalf("exported entries %v", names)
	}

	var buf bytes.Buffer
	ds, err := d.DiffTo("child", "base", &buf)
	must(t, err)
	if !bytes.Equal(buf.Bytes(), exported) || ds.TarBytes != int64(len(exported)) ||
		ds.Digest != fmt.Sprintf("sha256:%x", sha256.Sum256(exported)) {
		t.Fatalf("DiffTo stats %+v disagree with the stream", ds)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "export.tar"))
	must(t, err)
	ds2, err := d.DiffTo("child", "base", f)
	f.Close()
	must(t, err)
	if ds2 != ds {
		t.Fatalf("DiffTo a file: %+v, to a buffer: %+v", ds2, ds)
	}

	st, err := d.ApplyDiffStats("child2", "base", bytes.NewReader(exported))
	must(t, err)
	rc, err = d.Diff("child2", "base")
	must(t, err)
	again, err := io.ReadAll(rc)
	must(t, err)
	rc.Close()
	if !bytes.Equal(again, exported) || st.Digest != ds.Digest {
		t.Fatal("export -> apply -> export changed the bytes")
	}
}

func TestArchiveErrors(t *testing.T) {
	d, _ := open(t)
	must(t, d.Create("base", "", nil))
	must(t, d.Create("child", "base", nil))
	must(t, d.Create("empty", "", nil))
	_, err := d.ApplyDiff("base", "", bytes.NewReader(makeTar(t, baseEntries...)))
	must(t, err)

	_, err = d.ApplyDiff("empty", "", bytes.NewReader(bytes.Repeat([]byte("not a tar "), 200)))
	wantErr(t, err, ovl2.ErrCorruptArchive, syscall.EBADMSG, "apply_diff", "empty")
	good := makeTar(t, baseEntries...)
	_, err = d.ApplyDiff("empty", "", bytes.NewReader(good[:700]))
	wantErr(t, err, ovl2.ErrCorruptArchive, syscall.EBADMSG, "apply_diff", "empty")
	_, err = d.ApplyDiff("empty", "", bytes.NewReader([]byte("BZh91AY&SY")))
	wantErr(t, err, ovl2.ErrUnsupported, 0, "apply_diff", "empty")
	// A reader that fails mid-stream: its error is what the caller sees.
	boom := errors.New("boom")
	_, err = d.ApplyDiff("empty", "", io.MultiReader(bytes.NewReader(good[:1024]), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) {
		t.Fatalf("reader error lost: %v", err)
	}
	if ch, err := d.Changes("empty", ""); err != nil || len(ch) != 0 {
		t.Fatalf("failed applies left content: %v %v", ch, err)
	}

	_, err = d.ApplyDiff("base", "", bytes.NewReader(good))
	wantErr(t, err, ovl2.ErrInvalidArgument, syscall.EINVAL, "apply_diff", "base")
	_, err = d.ApplyDiff("child", "", bytes.NewReader(good))
	wantErr(t, err, ovl2.ErrInvalidArgument, syscall.EINVAL, "apply_diff", "child")
	_, err = d.ApplyDiff("nope", "", bytes.NewReader(good))
	wantErr(t, err, ovl2.ErrNotFound, syscall.ENOENT, "apply_diff", "nope")
	_, err = d.ApplyDiff("a\x00b", "", bytes.NewReader(good))
	wantErr(t, err, ovl2.ErrInvalidArgument, syscall.EINVAL, "apply_diff", "a\x00b")

	_, err = d.Diff("nope", "")
	wantErr(t, err, ovl2.ErrNotFound, syscall.ENOENT, "parent", "nope")
	rc, err := d.Diff("nope2", "base")
	if err == nil {
		rc.Close()
	}
	wantErr(t, err, ovl2.ErrNotFound, syscall.ENOENT, "parent", "nope2")
	_, err = d.DiffTo("nope", "", io.Discard)
	wantErr(t, err, ovl2.ErrNotFound, syscall.ENOENT, "parent", "nope")
	_, err = d.DiffSize("nope", "")
	wantErr(t, err, ovl2.ErrNotFound, syscall.ENOENT, "diff_size", "nope")
	_, err = d.Changes("nope", "")
	wantErr(t, err, ovl2.ErrNotFound, syscall.ENOENT, "changes", "nope")
	_, err = d.Changes("../x", "")
	wantErr(t, err, ovl2.ErrInvalidArgument, syscall.EINVAL, "changes", "../x")

	// Against no parent, a layer that has one exports as Docker's naive diff: the whole
	// merged tree, which needs a mount.
	if os.Geteuid() == 0 {
		rc, err := d.Diff("child", "")
		must(t, err)
		b, err := io.ReadAll(rc)
		rc.Close()
		must(t, err)
		if names := fmt.Sprint(tarNames(t, b)); !strings.Contains(names, "hello.txt") {
			t.Fatalf("naive export of child: %s", names)
		}
	}

	// Stopping a Diff early must neither hang nor break the store.
	big := []entry{{name: "big.bin", body: string(bytes.Repeat([]byte{'x'}, 4<<20))}}
	must(t, d.Create("big", "", nil))
	_, err = d.ApplyDiff("big", "", bytes.NewReader(makeTar(t, big...)))
	must(t, err)
	rc, err = d.Diff("big", "")
	must(t, err)
	_, err = io.ReadFull(rc, make([]byte, 1000))
	must(t, err)
	must(t, rc.Close())
	must(t, rc.Close())
	if ps, err := d.Check(); err != nil || len(ps) != 0 {
		t.Fatalf("store after an abandoned Diff: %v %v", ps, err)
	}
}

func TestApplyDiffWithExpectDigest(t *testing.T) {
	d, _ := open(t)
	must(t, d.Create("a", "", nil))
	layer := makeTar(t, baseEntries...)
	want := fmt.Sprintf("sha256:%x", sha256.Sum256(layer))
	_, err := d.ApplyDiffWith("a", "", bytes.NewReader(layer), &ovl2.ApplyOpts{ExpectDigest: "sha256:" + strings.Repeat("0", 64)})
	wantErr(t, err, ovl2.ErrCorruptArchive, syscall.EBADMSG, "apply_diff", "a")
	if ch, err := d.Changes("a", ""); err != nil || len(ch) != 0 {
		t.Fatalf("a digest mismatch left content: %v %v", ch, err)
	}
	on := true
	st, err := d.ApplyDiffWith("a", "", bytes.NewReader(layer), &ovl2.ApplyOpts{ExpectDigest: want, Sync: &on})
	must(t, err)
	if st.Digest != want {
		t.Fatalf("digest %s, want %s", st.Digest, want)
	}
}

func TestConcurrentApplyDiff(t *testing.T) {
	d, _ := open(t)
	must(t, d.Create("base", "", nil))
	_, err := d.ApplyDiff("base", "", bytes.NewReader(makeTar(t, baseEntries...)))
	must(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			id := fmt.Sprintf("c%d", g)
			body := fmt.Sprintf("goroutine %d", g)
			layer := makeTar(t, entry{name: "mine.txt", body: body})
			if err := d.Create(id, "base", nil); err != nil {
				errs <- err
				return
			}
			st, err := d.ApplyDiffStats(id, "base", bytes.NewReader(layer))
			if err != nil {
				errs <- err
				return
			}
			var out bytes.Buffer
			ds, err := d.DiffTo(id, "base", &out)
			if err != nil || ds.Digest != st.Digest {
				errs <- fmt.Errorf("%s: export %v digest %s vs %s", id, err, ds.Digest, st.Digest)
				return
			}
			if _, err := d.ApplyDiff(id, "base", bytes.NewReader(layer)); !errors.Is(err, ovl2.ErrInvalidArgument) {
				errs <- fmt.Errorf("%s: second apply: %v", id, err)
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
