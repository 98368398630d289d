//go:build linux

package ovl2

/*
#include <stdlib.h>
#include <ovl2.h>
*/
import "C"

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"
)

// Compression is how an applied layer stream was compressed.
type Compression int

// Compressions, detected from the stream's first bytes.
const (
	CompressionNone Compression = C.OVL2_COMPRESSION_NONE
	CompressionGzip Compression = C.OVL2_COMPRESSION_GZIP
	CompressionZstd Compression = C.OVL2_COMPRESSION_ZSTD
)

func (c Compression) String() string {
	switch c {
	case CompressionNone:
		return "none"
	case CompressionGzip:
		return "gzip"
	case CompressionZstd:
		return "zstd"
	}
	return fmt.Sprintf("Compression(%d)", int(c))
}

// ApplyStats says what ApplyDiffStats did.
type ApplyStats struct {
	Size          int64  // Docker's ApplyDiff value (see ApplyDiff)
	Digest        string // "sha256:<hex>" of the uncompressed tar (the DiffID)
	TarBytes      int64  // length of the uncompressed tar
	Compression   Compression
	Entries       int64
	Files         int64
	Dirs          int64
	Symlinks      int64
	Hardlinks     int64
	Whiteouts     int64
	OpaqueDirs    int64
	Special       int64 // devices and fifos
	Skipped       int64 // entries deliberately not applied
	DroppedXattrs int64 // overlay-private xattrs found in the tar and dropped
}

// ApplyDiff applies a layer tar (plain, gzip or zstd) read from r to the empty layer id and
// returns Docker's size value, as Docker's ApplyDiff does for any parent:
//
//   - parent is the layer's own parent ("" for a base layer): the tar is written straight
//     into the layer's diff (whiteouts become overlay whiteouts); the size is that of the
//     layer's non-directories.
//   - any other parent ("" for a layer that has one): the tar is unpacked into the
//     layer's mounted view, as Docker's naive ApplyDiff does (whiteouts delete what the
//     lower layers show); the size is the sum of the tar's entry sizes. Needs mounting
//     rights when the layer has a parent.
//
// Nothing outside the layer is touched, whatever the tar holds; on error the layer is left
// as it was (ErrCorruptArchive for a malformed, truncated or hostile stream, ErrNotFound
// when parent names no layer, ErrBusy when the layer or a layer on it is mounted).
func (d *Driver) ApplyDiff(id, parent string, r io.Reader) (int64, error) {
	st, err := d.ApplyDiffStats(id, parent, r)
	return st.Size, err
}

// ApplyDiffStats is ApplyDiff returning everything the library reports.
func (d *Driver) ApplyDiffStats(id, parent string, r io.Reader) (ApplyStats, error) {
	return d.ApplyDiffWith(id, parent, r, nil)
}

// ApplyOpts are the options of ApplyDiffWith.
type ApplyOpts struct {
	// ExpectDigest is the DiffID the uncompressed stream must have ("sha256:<hex>", as in
	// an image config); on a mismatch the apply fails with ErrCorruptArchive and the layer
	// stays empty. "" checks nothing.
	ExpectDigest string
	// Sync overrides the store's sync option for this apply when not nil.
	Sync *bool
}

// ApplyDiffWith is ApplyDiffStats with options; opts may be nil.
func (d *Driver) ApplyDiffWith(id, parent string, r io.Reader, opts *ApplyOpts) (ApplyStats, error) {
	return d.ApplyDiffContext(context.Background(), id, parent, r, opts)
}

// ApplyDiffContext is ApplyDiffWith that stops when ctx is done: the stream is cut, the
// library rolls the apply back (the layer stays empty) and the error wraps ctx.Err(), so
// errors.Is(err, context.Canceled) holds. An apply that completed before the cancellation
// took effect stays applied and returns no error. A reader blocked in Read is abandoned:
// the goroutine copying it ends when its Read returns.
func (d *Driver) ApplyDiffContext(ctx context.Context, id, parent string, r io.Reader, opts *ApplyOpts) (ApplyStats, error) {
	var out ApplyStats
	if err := ctx.Err(); err != nil {
		return out, fmt.Errorf("ovl2 apply_diff %s: %w", id, err)
	}
	err := d.with(func(cd *C.ovl2_driver) error {
		var a cargs
		defer a.free()
		cid, err := a.str("apply_diff", id, "id", id)
		if err != nil {
			return err
		}
		cparent, err := a.optStr("apply_diff", id, "parent", parent)
		if err != nil {
			return err
		}
		var ao C.ovl2_apply_opts
		C.ovl2_apply_opts_init(&ao)
		if opts != nil {
			if ao.expect_digest, err = a.optStr("apply_diff", id, "expected digest", opts.ExpectDigest); err != nil {
				return err
			}
			if opts.Sync != nil {
				ao.set_sync, ao.sync = 1, cflag(*opts.Sync)
			}
		}
		var st *C.ovl2_apply_stats
		err = withReadFd(ctx, id, r, func(fd C.int) error {
			return call("apply_diff", id, func(e **C.ovl2_error) C.enum_ovl2_status {
				return C.ovl2_apply_diff_with(cd, cid, cparent, fd, &ao, &st, e)
			})
		})
		if err != nil {
			return err
		}
		defer C.ovl2_apply_stats_free(st)
		out = applyStats(st)
		return nil
	})
	return out, err
}

func applyStats(st *C.ovl2_apply_stats) ApplyStats {
	return ApplyStats{
		Size: int64(st.size), Digest: C.GoString(st.digest), TarBytes: int64(st.tar_bytes),
		Compression: Compression(st.compression), Entries: int64(st.entries), Files: int64(st.files),
		Dirs: int64(st.dirs), Symlinks: int64(st.symlinks), Hardlinks: int64(st.hardlinks),
		Whiteouts: int64(st.whiteouts), OpaqueDirs: int64(st.opaque_dirs), Special: int64(st.special),
		Skipped: int64(st.skipped), DroppedXattrs: int64(st.dropped_xattrs),
	}
}

// withReadFd hands f a file descriptor that reads r: the file's own fd when r is an
// *os.File and ctx can never be cancelled, else the read end of a pipe that a goroutine
// fills from r. A read error from r wins over what the library made of the cut-short
// stream. When ctx is done the pipe is closed, so the library sees the stream end early
// and fails (rolling back); that failure is returned wrapping ctx.Err().
//
// File.Fd puts the descriptor in blocking mode, which the library's plain read(2) needs.
func withReadFd(ctx context.Context, id string, r io.Reader, f func(C.int) error) error {
	return withReadFds(ctx, "apply_diff", id, []io.Reader{r}, func(fds []C.int) error { return f(fds[0]) })
}

// feed is one pipe withReadFds fills from a reader.
type feed struct {
	r      io.Reader
	pr, pw *os.File
	closeW sync.Once
	copied chan error
}

func (fe *feed) cut() { fe.closeW.Do(func() { fe.pw.Close() }) }

// withReadFds is withReadFd for several readers at once (one fd each, in order), for calls
// that read several streams one after the other: every pipe's goroutine starts at once and
// blocks until the library reaches its stream. Pipes the library never read (it failed on
// an earlier stream) are closed, which ends their goroutines with EPIPE.
func withReadFds(ctx context.Context, op, id string, rs []io.Reader, f func([]C.int) error) error {
	fds := make([]C.int, len(rs))
	var files []*os.File
	var feeds []*feed
	closeAll := func() {
		for _, fe := range feeds {
			fe.pr.Close()
			fe.cut()
		}
	}
	for i, r := range rs {
		if file, ok := r.(*os.File); ok && ctx.Done() == nil {
			fds[i] = C.int(file.Fd())
			files = append(files, file)
			continue
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			closeAll()
			return err
		}
		feeds = append(feeds, &feed{r: r, pr: pr, pw: pw, copied: make(chan error, 1)})
		fds[i] = C.int(pr.Fd())
	}
	for _, fe := range feeds {
		go func() {
			_, err := io.Copy(fe.pw, fe.r)
			fe.cut()
			fe.copied <- err
		}()
	}
	stop := context.AfterFunc(ctx, func() {
		for _, fe := range feeds {
			fe.cut()
		}
	})
	ferr := f(fds)
	stop()
	runtime.KeepAlive(files)
	// Closing the read ends unblocks the copiers if the library stopped reading early.
	for _, fe := range feeds {
		fe.pr.Close()
	}
	if cerr := ctx.Err(); cerr != nil {
		// A copier may sit in r.Read for good: do not wait for it.
		if ferr == nil {
			return nil
		}
		return fmt.Errorf("ovl2 %s %s: %w (rolled back: %w)", op, id, cerr, ferr)
	}
	for _, fe := range feeds {
		cerr := <-fe.copied
		if cerr != nil && !errors.Is(cerr, syscall.EPIPE) {
			return fmt.Errorf("ovl2 %s: reading the layer stream: %w", op, cerr)
		}
	}
	return ferr
}

// DiffStats says what a Diff wrote.
type DiffStats struct {
	TarBytes int64  // length of the tar stream
	Digest   string // "sha256:<hex>" of the tar stream (the DiffID)
	Entries  int64
}

// DiffOpts are the options of DiffToContext (and of DiffContext, whose reader has no stats
// to give, so it never computes the digest).
type DiffOpts struct {
	// NoDigest skips the stream's sha256 (DiffStats.Digest is then ""): the export does
	// no more work than tar -c. Use it when hashing the stream yourself.
	NoDigest bool
}

// Diff returns layer id as an uncompressed tar in Docker's layer format, relative to
// parent: the layer's own parent ("" for a base layer) exports the layer's diff; any
// other parent ("" for a layer that has one) exports what differs between the two
// mounted views, as Docker's naive Diff does. A small layer's stream (up to 16 entries and
// 64 KiB, against its own parent) is made at once and its errors come from Diff; a larger
// one is produced while it is read, and its error, if any, comes from Read. Close it when
// done, also when stopping early.
func (d *Driver) Diff(id, parent string) (io.ReadCloser, error) {
	return d.DiffContext(context.Background(), id, parent, nil)
}

// DiffContext is Diff with options (opts may be nil) that stops when ctx is done: the
// export ends at its next write, and Read returns an error wrapping ctx.Err().
func (d *Driver) DiffContext(ctx context.Context, id, parent string, opts *DiffOpts) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ovl2 diff %s: %w", id, err)
	}
	// A reader has no stats to give, so no digest is computed for it.
	noDigest := &DiffOpts{NoDigest: true}
	if tar, _, ok, err := d.diffSmall(id, parent, noDigest); err != nil {
		return nil, err
	} else if ok {
		return &smallReader{r: bytes.NewReader(tar), ctx: ctx, id: id}, nil
	}
	return d.diffStream(ctx, id, parent, noDigest)
}

// smallReader is a small layer's tar, made in memory; like a streamed one, it stops with
// ctx's error once ctx is done.
type smallReader struct {
	r   *bytes.Reader
	ctx context.Context
	id  string
}

func (s *smallReader) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, fmt.Errorf("ovl2 diff %s: %w", s.id, err)
	}
	return s.r.Read(p)
}

// Close releases nothing: the stream is in memory.
func (s *smallReader) Close() error { return nil }

// smallDiff is the longest stream a Diff makes in memory rather than on another thread.
// Handing a stream from one thread to another costs about 160 µs on a small VM, twice
// what exporting a few small files does. The library gives up on a larger layer as soon
// as a listing or a file's size shows it, before reading the rest.
const smallDiff = 64 << 10

// diffSmall is layer id's tar made in memory (ovl2_diff_small); ok is false when it is
// longer than smallDiff or needs mounted views, and must be streamed.
func (d *Driver) diffSmall(id, parent string, opts *DiffOpts) (tar []byte, st DiffStats, ok bool, err error) {
	err = d.with(func(cd *C.ovl2_driver) error {
		var a cargs
		defer a.free()
		cid, cparent, do, err := diffArgs(&a, id, parent, opts)
		if err != nil {
			return err
		}
		var b *C.ovl2_diff_bytes
		err = call("diff", id, func(e **C.ovl2_error) C.enum_ovl2_status {
			return C.ovl2_diff_small(cd, cid, cparent, &do, smallDiff, &b, e)
		})
		if err != nil || b == nil {
			return err
		}
		defer C.ovl2_diff_bytes_free(b)
		tar = C.GoBytes(unsafe.Pointer(b.data), C.int(b.len))
		st = goDiffStats(&b.stats)
		ok = true
		return nil
	})
	return tar, st, ok, err
}

// diffStream runs the export on another goroutine, writing into a pipe the returned
// reader reads.
func (d *Driver) diffStream(ctx context.Context, id, parent string, opts *DiffOpts) (*diffReader, error) {
	pr, pw, err := diffPipe()
	if err != nil {
		return nil, err
	}
	dr := &diffReader{pr: pr, done: make(chan struct{}), ctx: ctx, id: id}
	go func() {
		defer close(dr.done)
		dr.stats, dr.err = d.diffTo(id, parent, C.int(pw), opts)
		syscall.Close(pw)
	}()
	// Closing the read end makes the library's next write fail (EPIPE): the export ends.
	dr.stop = context.AfterFunc(ctx, dr.closeRead)
	return dr, nil
}

// diffPipe returns a pipe for a Diff: the read end an *os.File in the runtime's poller (so
// Close and cancellation work), the write end a bare blocking fd for the library's plain
// write(2). Four syscalls, where os.Pipe and File.Fd take nine.
func diffPipe() (*os.File, int, error) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return nil, -1, os.NewSyscallError("pipe2", err)
	}
	if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(p[1]), syscall.F_SETFL, syscall.O_WRONLY); errno != 0 {
		syscall.Close(p[0])
		syscall.Close(p[1])
		return nil, -1, os.NewSyscallError("fcntl", errno)
	}
	return os.NewFile(uintptr(p[0]), "|0"), p[1], nil
}

// DiffTo writes layer id's tar (see Diff) to w and returns what was written.
func (d *Driver) DiffTo(id, parent string, w io.Writer) (DiffStats, error) {
	return d.DiffToContext(context.Background(), id, parent, w, nil)
}

// DiffToContext is DiffTo with options (opts may be nil) that stops when ctx is done,
// returning an error that wraps ctx.Err(); w then holds a cut-short tar.
func (d *Driver) DiffToContext(ctx context.Context, id, parent string, w io.Writer, opts *DiffOpts) (DiffStats, error) {
	if file, ok := w.(*os.File); ok && ctx.Done() == nil {
		st, err := d.diffTo(id, parent, C.int(file.Fd()), opts) // Fd: blocking mode, for plain write(2)
		runtime.KeepAlive(file)
		return st, err
	}
	if err := ctx.Err(); err != nil {
		return DiffStats{}, fmt.Errorf("ovl2 diff %s: %w", id, err)
	}
	if tar, st, ok, err := d.diffSmall(id, parent, opts); err != nil {
		return DiffStats{}, err
	} else if ok {
		n, err := w.Write(tar)
		if err == nil && n != len(tar) {
			err = io.ErrShortWrite
		}
		if err != nil {
			return DiffStats{}, fmt.Errorf("ovl2 diff %s: writing the layer stream: %w", id, err)
		}
		return st, nil
	}
	dr, err := d.diffStream(ctx, id, parent, opts)
	if err != nil {
		return DiffStats{}, err
	}
	ew := &errWriter{w: w}
	_, cerr := io.Copy(ew, dr)
	dr.Close()
	if err := ctx.Err(); err != nil && (cerr != nil || dr.err != nil) {
		return DiffStats{}, fmt.Errorf("ovl2 diff %s: %w", id, err)
	}
	if ew.err != nil {
		// The writer failed first; the export then only saw its pipe closed (EPIPE).
		return DiffStats{}, fmt.Errorf("ovl2 diff %s: writing the layer stream: %w", id, ew.err)
	}
	if dr.err != nil {
		return DiffStats{}, dr.err
	}
	return dr.stats, cerr
}

// errWriter remembers the error its writer returned, so a caller can tell it from the
// reader's.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil && e.err == nil {
		e.err = err
	}
	return n, err
}

// diffTo writes the tar to fd, which must be in blocking mode.
func (d *Driver) diffTo(id, parent string, fd C.int, opts *DiffOpts) (DiffStats, error) {
	var out DiffStats
	err := d.with(func(cd *C.ovl2_driver) error {
		var a cargs
		defer a.free()
		cid, cparent, do, err := diffArgs(&a, id, parent, opts)
		if err != nil {
			return err
		}
		var st *C.ovl2_diff_stats
		err = call("diff", id, func(e **C.ovl2_error) C.enum_ovl2_status {
			return C.ovl2_diff_with(cd, cid, cparent, fd, &do, &st, e)
		})
		if err != nil {
			return err
		}
		defer C.ovl2_diff_stats_free(st)
		out = goDiffStats(st)
		return nil
	})
	return out, err
}

// diffArgs converts the arguments every diff call passes to the library.
func diffArgs(a *cargs, id, parent string, opts *DiffOpts) (cid, cparent *C.char, do C.ovl2_diff_opts, err error) {
	if cid, err = a.str("diff", id, "id", id); err != nil {
		return
	}
	if cparent, err = a.optStr("diff", id, "parent", parent); err != nil {
		return
	}
	C.ovl2_diff_opts_init(&do)
	if opts != nil {
		do.digest = cflag(!opts.NoDigest)
	}
	return
}

// goDiffStats copies the library's diff stats into Go memory.
func goDiffStats(st *C.ovl2_diff_stats) DiffStats {
	out := DiffStats{TarBytes: int64(st.tar_bytes), Entries: int64(st.entries)}
	if st.digest != nil {
		out.Digest = C.GoString(st.digest)
	}
	return out
}

// diffReader reads the tar a library call writes into a pipe on another goroutine.
type diffReader struct {
	pr       *os.File
	done     chan struct{}
	once     sync.Once
	readOnce sync.Once
	ctx      context.Context
	id       string
	stop     func() bool // unregisters the cancellation
	stats    DiffStats
	err      error // set before done is closed
}

func (r *diffReader) closeRead() { r.readOnce.Do(func() { r.pr.Close() }) }

func (r *diffReader) Read(p []byte) (int, error) {
	n, err := r.pr.Read(p)
	if err != nil {
		if cerr := r.ctx.Err(); cerr != nil {
			<-r.done
			return n, fmt.Errorf("ovl2 diff %s: %w", r.id, cerr)
		}
	}
	if err == io.EOF {
		<-r.done
		if r.err != nil {
			return n, r.err
		}
	}
	return n, err
}

// Close stops the export (the library sees EPIPE) and waits for it to end.
func (r *diffReader) Close() error {
	r.once.Do(func() {
		r.stop()
		r.closeRead()
		<-r.done
	})
	return nil
}

// DiffSize is Docker's DiffSize of layer id against parent ("" for none).
func (d *Driver) DiffSize(id, parent string) (int64, error) {
	var out C.uint64_t
	err := d.with(func(cd *C.ovl2_driver) error {
		var a cargs
		defer a.free()
		cid, err := a.str("diff_size", id, "id", id)
		if err != nil {
			return err
		}
		cparent, err := a.optStr("diff_size", id, "parent", parent)
		if err != nil {
			return err
		}
		return call("diff_size", id, func(e **C.ovl2_error) C.enum_ovl2_status {
			return C.ovl2_diff_size(cd, cid, cparent, &out, e)
		})
	})
	return int64(out), err
}

// ChangeKind is how a path changed, with Docker's values.
type ChangeKind int

// Change kinds, as in Docker's archive package.
const (
	ChangeModify ChangeKind = C.OVL2_CHANGE_KIND_MODIFY
	ChangeAdd    ChangeKind = C.OVL2_CHANGE_KIND_ADD
	ChangeDelete ChangeKind = C.OVL2_CHANGE_KIND_DELETE
)

// String is Docker's letter: "C", "A" or "D".
func (k ChangeKind) String() string {
	switch k {
	case ChangeModify:
		return "C"
	case ChangeAdd:
		return "A"
	case ChangeDelete:
		return "D"
	}
	return "?"
}

// Change is one changed path.
type Change struct {
	Path string // absolute path inside the container filesystem
	Kind ChangeKind
}

func (c Change) String() string { return c.Kind.String() + " " + c.Path }

// Changes lists the paths layer id adds, modifies or deletes relative to parent ("" for
// none), sorted by path, with Docker's rules.
func (d *Driver) Changes(id, parent string) ([]Change, error) {
	var l *C.ovl2_change_list
	err := d.with(func(cd *C.ovl2_driver) error {
		var a cargs
		defer a.free()
		cid, err := a.str("changes", id, "id", id)
		if err != nil {
			return err
		}
		cparent, err := a.optStr("changes", id, "parent", parent)
		if err != nil {
			return err
		}
		return call("changes", id, func(e **C.ovl2_error) C.enum_ovl2_status {
			return C.ovl2_changes(cd, cid, cparent, &l, e)
		})
	})
	if err != nil {
		return nil, err
	}
	defer C.ovl2_change_list_free(l)
	out := make([]Change, 0, l.len)
	for _, c := range unsafe.Slice(l.items, l.len) {
		out = append(out, Change{Path: C.GoString(c.path), Kind: ChangeKind(c.kind)})
	}
	return out, nil
}

// ImportOpts are the options of ImportChain.
type ImportOpts struct {
	// Sync overrides the store's sync option for each layer's apply when not nil.
	Sync *bool
}

// ImportedLayer is one layer ImportChain made.
type ImportedLayer struct {
	ID    string
	Stats ApplyStats
}

// ImportChain creates one layer per tar in tars (base first) on top of parent ("" for
// none) and applies each tar (plain, gzip or zstd) into its layer: an image's layers in
// one call. The top layer is top, those below it top-1, top-2, ... from the base. All or
// nothing: on any error the layers it made are removed and parent loses the committed
// marker they gave it; if the process is killed half way, the next Open (or Repair) does
// the same. Returns the layers made, base first. opts may be nil.
func (d *Driver) ImportChain(top, parent string, tars []io.Reader, opts *ImportOpts) ([]ImportedLayer, error) {
	var l *C.ovl2_import_list
	err := d.with(func(cd *C.ovl2_driver) error {
		var a cargs
		defer a.free()
		ctop, err := a.str("import_chain", top, "top", top)
		if err != nil {
			return err
		}
		cparent, err := a.optStr("import_chain", top, "parent", parent)
		if err != nil {
			return err
		}
		var o C.ovl2_import_opts
		C.ovl2_import_opts_init(&o)
		if opts != nil && opts.Sync != nil {
			o.set_sync, o.sync = 1, cflag(*opts.Sync)
		}
		return withReadFds(context.Background(), "import_chain", top, tars, func(fds []C.int) error {
			// A non-NULL array even when empty, so the library names what is wrong (no tars).
			fds = append(fds, -1)
			a.pin.Pin(&fds[0])
			return call("import_chain", top, func(e **C.ovl2_error) C.enum_ovl2_status {
				return C.ovl2_import_chain(cd, ctop, cparent, &fds[0], C.size_t(len(fds)-1), &o, &l, e)
			})
		})
	})
	if err != nil {
		return nil, err
	}
	defer C.ovl2_import_list_free(l)
	out := make([]ImportedLayer, 0, l.len)
	for _, it := range unsafe.Slice(l.items, l.len) {
		out = append(out, ImportedLayer{ID: C.GoString(it.id), Stats: applyStats(&it.stats)})
	}
	return out, nil
}
