//go:build linux

package ovl2_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
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
	"time"

	"github.com/ovl2/ovl2/ovl2-go"
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
	// Any parent is accepted (Docker's naive path), but one that is no layer is a mistake.
	_, err = d.ApplyDiff("child", "ghost", bytes.NewReader(good))
	wantErr(t, err, ovl2.ErrNotFound, syscall.ENOENT, "apply_diff", "child")
	_, err = d.ApplyDiff("nope", "", bytes.NewReader(good))
	wantErr(t, err, ovl2.ErrNotFound, syscall.ENOENT, "apply_diff", "nope")
	_, err = d.ApplyDiff("a\x00b", "", bytes.NewReader(good))
	wantErr(t, err, ovl2.ErrInvalidArgument, syscall.EINVAL, "apply_diff", "a\x00b")

	// The error names the call that was made (Diff), from Diff itself, not from a Read.
	_, err = d.Diff("nope", "")
	wantErr(t, err, ovl2.ErrNotFound, syscall.ENOENT, "diff", "nope")
	rc, err := d.Diff("nope2", "base")
	if err == nil {
		rc.Close()
	}
	wantErr(t, err, ovl2.ErrNotFound, syscall.ENOENT, "diff", "nope2")
	_, err = d.DiffTo("nope", "", io.Discard)
	wantErr(t, err, ovl2.ErrNotFound, syscall.ENOENT, "diff", "nope")
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

// stalled yields data, then blocks in Read until release is closed: a network stream that
// stopped delivering.
type stalled struct {
	data    []byte
	release chan struct{}
}

func (s *stalled) Read(p []byte) (int, error) {
	if len(s.data) > 0 {
		n := copy(p, s.data)
		s.data = s.data[n:]
		return n, nil
	}
	<-s.release
	return 0, io.EOF
}

func stagingEmpty(t *testing.T, home string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(home, ".ovl2", "staging"))
	must(t, err)
	if len(ents) != 0 {
		t.Fatalf("staging left behind: %v", ents)
	}
}

func TestApplyDiffContextCancels(t *testing.T) {
	d, home := open(t)
	must(t, d.Create("a", "", nil))
	layer := makeTar(t, entry{name: "big.bin", body: string(bytes.Repeat([]byte{'x'}, 1<<20))}, entry{name: "z", body: "z"})
	half := layer[:len(layer)/2]
	empty := func() {
		t.Helper()
		if ch, err := d.Changes("a", ""); err != nil || len(ch) != 0 {
			t.Fatalf("a cancelled apply left content: %v %v", ch, err)
		}
		stagingEmpty(t, home)
	}

	// A reader that stalls: cancellation cuts the stream and the apply rolls back.
	r := &stalled{data: half, release: make(chan struct{})}
	defer close(r.release)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := d.ApplyDiffContext(ctx, "a", "", r, nil)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ovl2.ErrCorruptArchive) {
		t.Fatalf("cancelled apply: %v", err)
	}
	empty()

	// An *os.File (here a pipe nobody finishes writing) goes through the cancellable copy
	// too, and a deadline counts as a cancellation.
	pr, pw, err := os.Pipe()
	must(t, err)
	defer pw.Close()
	defer pr.Close()
	_, err = pw.Write(half[:4096])
	must(t, err)
	ctx, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	_, err = d.ApplyDiffContext(ctx, "a", "", pr, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("apply past its deadline: %v", err)
	}
	empty()

	// Already cancelled: nothing starts.
	_, err = d.ApplyDiffContext(ctx, "a", "", bytes.NewReader(layer), nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("apply with a done context: %v", err)
	}
	empty()

	// A context that is never cancelled changes nothing.
	st, err := d.ApplyDiffContext(context.Background(), "a", "", bytes.NewReader(layer), nil)
	must(t, err)
	if st.Files != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDiffContextCancelsAndNoDigest(t *testing.T) {
	d, home := open(t)
	must(t, d.Create("big", "", nil))
	_, err := d.ApplyDiff("big", "", bytes.NewReader(makeTar(t, entry{name: "big.bin", body: string(bytes.Repeat([]byte{'x'}, 8<<20))})))
	must(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	rc, err := d.DiffContext(ctx, "big", "", nil)
	must(t, err)
	_, err = io.ReadFull(rc, make([]byte, 1000))
	must(t, err)
	cancel()
	_, err = io.ReadAll(rc)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %v", err)
	}
	must(t, rc.Close())
	_, err = d.DiffToContext(ctx, "big", "", io.Discard, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("DiffToContext with a done context: %v", err)
	}
	// Cancelled while copying into a file: the export stops and says why.
	f, err := os.Create(filepath.Join(t.TempDir(), "out.tar"))
	must(t, err)
	defer f.Close()
	ctx, cancel = context.WithCancel(context.Background())
	slow := &slowWriter{w: f, after: 1 << 20, cancel: cancel}
	_, err = d.DiffToContext(ctx, "big", "", slow, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("DiffToContext cancelled mid-stream: %v", err)
	}
	if ps, err := d.Check(); err != nil || len(ps) != 0 {
		t.Fatalf("store after cancelled exports: %v %v", ps, err)
	}
	stagingEmpty(t, home)

	// The digest can be turned off; the bytes are the same.
	var with, without bytes.Buffer
	st, err := d.DiffTo("big", "", &with)
	must(t, err)
	ns, err := d.DiffToContext(context.Background(), "big", "", &without, &ovl2.DiffOpts{NoDigest: true})
	must(t, err)
	if st.Digest == "" || ns.Digest != "" || ns.TarBytes != st.TarBytes || !bytes.Equal(with.Bytes(), without.Bytes()) {
		t.Fatalf("with digest %+v, without %+v", st, ns)
	}
	f2, err := os.Create(filepath.Join(t.TempDir(), "nodigest.tar"))
	must(t, err)
	defer f2.Close()
	ns, err = d.DiffToContext(context.Background(), "big", "", f2, &ovl2.DiffOpts{NoDigest: true})
	must(t, err)
	if ns.Digest != "" || ns.TarBytes != st.TarBytes {
		t.Fatalf("to a file without digest: %+v", ns)
	}
}

// A small layer's Diff is made in memory, a larger one streamed (also after the in-memory
// attempt gave up part way through many small files, or at one big file): every path
// gives the bytes and stats of the plain stream into a file.
func TestDiffSmallAndStreamedAgree(t *testing.T) {
	d, _ := open(t)
	many := make([]entry, 0, 300)
	for i := range 300 {
		many = append(many, entry{name: fmt.Sprintf("f%03d", i), body: strings.Repeat("m", 100)})
	}
	layers := map[string][]entry{
		"tiny":  baseEntries,
		"many":  many, // 300 entries: given up on in memory at the first listing
		"large": {{name: "big.bin", body: strings.Repeat("x", 200<<10)}},
		"empty": nil,
	}
	for id, entries := range layers {
		must(t, d.Create(id, "", nil))
		_, err := d.ApplyDiff(id, "", bytes.NewReader(makeTar(t, entries...)))
		must(t, err)

		f, err := os.Create(filepath.Join(t.TempDir(), id+".tar"))
		must(t, err)
		want, err := d.DiffTo(id, "", f) // a file: always the plain stream
		must(t, err)
		f.Close()
		streamed, err := os.ReadFile(f.Name())
		must(t, err)
		if int64(len(streamed)) != want.TarBytes || want.Digest != fmt.Sprintf("sha256:%x", sha256.Sum256(streamed)) {
			t.Fatalf("%s: stats %+v for %d bytes", id, want, len(streamed))
		}

		rc, err := d.Diff(id, "")
		must(t, err)
		got, err := io.ReadAll(rc)
		must(t, err)
		must(t, rc.Close())
		if !bytes.Equal(got, streamed) {
			t.Fatalf("%s: Diff gave %d bytes, the stream %d", id, len(got), len(streamed))
		}
		var buf bytes.Buffer
		st, err := d.DiffTo(id, "", &buf)
		must(t, err)
		if st != want || !bytes.Equal(buf.Bytes(), streamed) {
			t.Fatalf("%s: DiffTo a buffer: %+v, want %+v", id, st, want)
		}
	}
}

// A small layer's reader (made in memory) stops with the context like a streamed one, and a
// writer's failure is reported as the writer's, for small and streamed layers alike.
func TestDiffSmallCancelsAndWriterErrors(t *testing.T) {
	d, _ := open(t)
	must(t, d.Create("tiny", "", nil))
	_, err := d.ApplyDiff("tiny", "", bytes.NewReader(makeTar(t, baseEntries...)))
	must(t, err)
	must(t, d.Create("big", "", nil))
	_, err = d.ApplyDiff("big", "", bytes.NewReader(makeTar(t, entry{name: "big.bin", body: strings.Repeat("x", 2<<20)})))
	must(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	rc, err := d.DiffContext(ctx, "tiny", "", nil)
	must(t, err)
	cancel()
	if _, err := io.ReadAll(rc); !errors.Is(err, context.Canceled) {
		t.Fatalf("read of a small layer after cancel: %v", err)
	}
	must(t, rc.Close())

	boom := errors.New("disk full")
	for _, id := range []string{"tiny", "big"} {
		_, err := d.DiffTo(id, "", failingWriter{boom})
		if !errors.Is(err, boom) {
			t.Fatalf("%s: writer error lost: %v", id, err)
		}
		_, err = d.DiffTo(id, "", shortWriter{})
		if !errors.Is(err, io.ErrShortWrite) {
			t.Fatalf("%s: short write not reported: %v", id, err)
		}
	}
}

type failingWriter struct{ err error }

func (f failingWriter) Write([]byte) (int, error) { return 0, f.err }

// shortWriter takes one byte less than it is given and says nothing.
type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return max(len(p)-1, 0), nil }

// slowWriter cancels once `after` bytes went through.
type slowWriter struct {
	w      io.Writer
	after  int
	n      int
	cancel func()
}

func (s *slowWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	s.n += n
	if s.n >= s.after {
		s.cancel()
	}
	return n, err
}

// Docker's DriverBenchDiffApplyN: ApplyDiff(layer, "") of another child's whole tree.
func TestApplyDiffOntoNoParent(t *testing.T) {
	needMount(t)
	d, _ := open(t)
	must(t, d.Create("base", "", nil))
	_, err := d.ApplyDiff("base", "", bytes.NewReader(makeTar(t, baseEntries...)))
	must(t, err)
	must(t, d.Create("upper", "base", nil))
	// Only additions and changes, as in Docker's bench: a whole-tree tar has no whiteouts,
	// so what the upper deleted would still show from base in the copy.
	_, err = d.ApplyDiff("upper", "base", bytes.NewReader(makeTar(t, childEntries[2:]...)))
	must(t, err)
	want, err := d.DiffSize("upper", "")
	must(t, err)
	rc, err := d.Diff("upper", "")
	must(t, err)
	must(t, d.Create("copy", "base", nil))
	size, err := d.ApplyDiff("copy", "", rc)
	rc.Close()
	must(t, err)
	if size != want {
		t.Fatalf("Apply diff size mismatch: %d vs %d", size, want)
	}
	a, err := d.Changes("copy", "")
	must(t, err)
	b, err := d.Changes("upper", "")
	must(t, err)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("trees differ:\n%v\n%v", a, b)
	}
}

func TestImportChain(t *testing.T) {
	d, home := open(t)
	must(t, d.Create("p", "", nil))
	// One stream from a file (passed as its own fd), one through a pipe.
	f, err := os.CreateTemp(t.TempDir(), "layer-*.tar")
	must(t, err)
	_, err = f.Write(makeTar(t, baseEntries...))
	must(t, err)
	_, err = f.Seek(0, io.SeekStart)
	must(t, err)
	defer f.Close()
	layers, err := d.ImportChain("img", "p", []io.Reader{f, bytes.NewReader(makeTar(t, baseEntries...))}, nil)
	must(t, err)
	if len(layers) != 2 || layers[0].ID != "img-1" || layers[1].ID != "img" || layers[0].Stats.Digest != layers[1].Stats.Digest {
		t.Fatalf("layers %+v", layers)
	}
	if parent, err := d.Parent("img-1"); err != nil || parent != "p" {
		t.Fatalf("img-1's parent %q %v", parent, err)
	}

	// A reader failing on the second layer: its error wins and nothing is left.
	boom := errors.New("boom")
	good := makeTar(t, baseEntries...)
	_, err = d.ImportChain("bad", "img", []io.Reader{bytes.NewReader(good), io.MultiReader(bytes.NewReader(good[:1024]), iotest.ErrReader(boom))}, nil)
	if !errors.Is(err, boom) {
		t.Fatalf("reader error lost: %v", err)
	}
	for _, id := range []string{"bad-1", "bad"} {
		if ok, err := d.Exists(id); err != nil || ok {
			t.Fatalf("%s left behind: %v %v", id, ok, err)
		}
	}
	// A failing first layer: the later streams' goroutines end (EPIPE) and the call returns.
	_, err = d.ImportChain("bad", "", []io.Reader{strings.NewReader("not a tar"), bytes.NewReader(good)}, nil)
	wantErr(t, err, ovl2.ErrCorruptArchive, syscall.EBADMSG, "import_chain", "bad")
	_, err = d.ImportChain("none", "", nil, nil)
	wantErr(t, err, ovl2.ErrInvalidArgument, syscall.EINVAL, "import_chain", "none")
	stagingEmpty(t, home)
	if entries, err := os.ReadDir(filepath.Join(home, ".ovl2/pending")); err != nil || len(entries) != 0 {
		t.Fatalf("pending records left: %v %v", entries, err)
	}
}
