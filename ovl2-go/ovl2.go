//go:build linux

// Package ovl2 is the Go face of libovl2, Docker's overlay2 layer store as a library.
//
// A store keeps image and container layers on disk in exactly the format of Docker's
// overlay2 driver. Open one with Open, share the *Driver between goroutines, and Close it
// when done:
//
//	d, err := ovl2.Open("/var/lib/ovl2", ovl2.WithMaxDepth(128))
//	if err != nil { ... }
//	defer d.Close()
//	err = d.Create("base", "", nil)
//	err = d.Create("app", "base", nil)
//	if errors.Is(err, ovl2.ErrExists) { ... }
//	size, err := d.ApplyDiff("app", "base", layerTar) // any io.Reader: plain, gzip or zstd
//	merged, err := d.Get("app", "")                     // mount; every Get needs a Put
//	defer d.Put("app")
//	rc, err := d.Diff("app", "base")                    // the layer as a tar, streamed
//
// The package links libovl2 through pkg-config (`#cgo pkg-config: ovl2`): install the
// library with scripts/install-lib.sh and point PKG_CONFIG_PATH at <prefix>/lib/pkgconfig.
// Until the repository is published, a module using this one replaces its path with a
// checkout: go mod edit -replace github.com/ovl2/ovl2/ovl2-go=/path/to/ovl2/ovl2-go
package ovl2

/*
#cgo pkg-config: ovl2
#include <stdlib.h>
#include <ovl2.h>
*/
import "C"

import (
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"unsafe"
)

// cargs holds one call's string arguments, NUL-terminated copies in Go memory, pinned until
// the call returns: the library reads them only during the call, and a copy in Go memory
// costs no cgo round trips (C.CString and C.free were two per string, more than the call
// itself for the cheap operations). Pinning lets option structs carry them too.
type cargs struct{ pin runtime.Pinner }

// str copies s for C, pinned until free: for strings stored in C structs that are passed
// by pointer. A NUL byte would silently cut the string short in C, so it is refused here
// with ErrInvalidArgument.
func (a *cargs) str(op, id, what, s string) (*C.char, error) {
	p, err := arg(op, id, what, s)
	if err != nil {
		return nil, err
	}
	a.pin.Pin(p)
	return p, nil
}

// arg copies s for C as a direct argument of one call, which cgo keeps in place for the
// call's duration: no pinning (a Pinner costs an allocation and two runtime calls, a
// measurable share of a call such as Exists). Refuses a NUL byte like str.
func arg(op, id, what, s string) (*C.char, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, &Error{Op: op, ID: id, Code: CodeInvalidArgument, Errno: syscall.EINVAL,
			Message: what + " contains a NUL byte"}
	}
	b := make([]byte, len(s)+1)
	copy(b, s)
	return (*C.char)(unsafe.Pointer(&b[0])), nil
}

// cflag is a flag of libovl2's options structs, which are uint8_t (0 or 1), not bool.
func cflag(on bool) C.uint8_t {
	if on {
		return 1
	}
	return 0
}

// optStr is str for optional arguments: "" becomes NULL.
func (a *cargs) optStr(op, id, what, s string) (*C.char, error) {
	p, err := optArg(op, id, what, s)
	if p != nil {
		a.pin.Pin(p)
	}
	return p, err
}

// optArg is arg for optional arguments: "" becomes NULL.
func optArg(op, id, what, s string) (*C.char, error) {
	if s == "" {
		return nil, nil
	}
	return arg(op, id, what, s)
}

func (a *cargs) free() { a.pin.Unpin() }

// Version is the version of the loaded libovl2.
func Version() string { return C.GoString(C.ovl2_version()) }

// MaxDepth limits, as in ovl2-core.
const (
	KernelMaxDepth = 500 // the kernel's limit on lower layers, and the default
	DockerMaxDepth = 128 // Docker's limit (at most 128 lowers); use it when Docker must mount the store too
)

// Driver is an open layer store. Its methods may be called from many goroutines at once.
type Driver struct {
	// mu lets Close wait for calls in flight and makes later calls return ErrClosed
	// instead of touching a freed handle.
	mu sync.RWMutex
	d  *C.ovl2_driver
}

type config struct {
	opts     C.ovl2_options
	disabled string
}

// Option changes how Open opens a store.
type Option func(*config)

// WithMaxDepth sets how many lower layers a layer may have (1..500), counted as Docker
// counts them: a base layer has depth 0, and Docker's WithMaxDepth(128) allows 128 lowers.
func WithMaxDepth(n int) Option {
	return func(c *config) {
		if n < 0 || n > 1<<31 {
			n = 0 // out of range: let the library reject it with ErrInvalidArgument
		}
		c.opts.max_depth = C.uint32_t(n)
	}
}

// WithSync turns fsync of metadata on (the default) or off. Off keeps crash safety
// against killed processes but not against power loss.
func WithSync(on bool) Option { return func(c *config) { c.opts.sync = cflag(on) } }

// WithRepairOnOpen turns repair of crash leftovers at open on (the default) or off.
func WithRepairOnOpen(on bool) Option { return func(c *config) { c.opts.repair_on_open = cflag(on) } }

// WithRoot sets the owner of layer contents, for user-namespace remapped containers.
func WithRoot(uid, gid uint32) Option {
	return func(c *config) {
		c.opts.set_root = 1
		c.opts.root_uid = C.uint32_t(uid)
		c.opts.root_gid = C.uint32_t(gid)
	}
}

// MountStrategy selects the kernel interface used for mounts.
type MountStrategy int

// Mount strategies.
const (
	// MountDefault uses $OVL2_MOUNT_STRATEGY (auto|new|legacy) if set, else MountAuto.
	MountDefault MountStrategy = C.OVL2_MOUNT_STRATEGY_DEFAULT
	// MountAuto uses the best the kernel offers: MountNew when available, else MountLegacy.
	MountAuto MountStrategy = C.OVL2_MOUNT_STRATEGY_AUTO
	// MountNew uses fsopen/fsconfig with one lowerdir+ per layer.
	MountNew MountStrategy = C.OVL2_MOUNT_STRATEGY_NEW
	// MountLegacy uses mount(2) with an option string.
	MountLegacy MountStrategy = C.OVL2_MOUNT_STRATEGY_LEGACY
)

// WithMountStrategy sets how layers are mounted.
func WithMountStrategy(s MountStrategy) Option {
	return func(c *config) { c.opts.mount_strategy = C.uint32_t(s) }
}

// WithDisabledFeatures treats kernel features as absent even when present (names as in
// the status key "Mount features", e.g. "lowerdir+fd"), to work around a buggy kernel.
// Without it, $OVL2_DISABLE_FEATURES applies.
func WithDisabledFeatures(names ...string) Option {
	return func(c *config) { c.disabled = strings.Join(names, ",") }
}

// OpenMode says what Open may do to the home directory.
type OpenMode int

// Open modes. Whatever the mode, a non-empty directory that is not a store is refused.
const (
	// OpenCreate opens the store, creating it in a missing or empty directory (the default).
	OpenCreate OpenMode = C.OVL2_OPEN_CREATE
	// OpenExisting opens an existing store for reading and writing, never creating one.
	OpenExisting OpenMode = C.OVL2_OPEN_EXISTING
	// OpenReadOnly opens an existing store and never writes to it: no repair on open, and
	// writing calls fail with ErrPermission (EROFS). Works on a read-only file system.
	OpenReadOnly OpenMode = C.OVL2_OPEN_READ_ONLY
)

// WithOpenMode sets what Open may do to the home directory (default OpenCreate).
func WithOpenMode(m OpenMode) Option { return func(c *config) { c.opts.open_mode = C.uint32_t(m) } }

// Open opens the store at home as the open mode allows (by default creating it when home
// is missing or an empty directory).
func Open(home string, opts ...Option) (*Driver, error) {
	var c config
	C.ovl2_options_init(&c.opts)
	for _, o := range opts {
		o(&c)
	}
	var a cargs
	defer a.free()
	chome, err := a.str("open", "", "home", home)
	if err != nil {
		return nil, err
	}
	if c.opts.disabled_features, err = a.optStr("open", "", "disabled features", c.disabled); err != nil {
		return nil, err
	}
	var d *C.ovl2_driver
	err = call("open", "", func(e **C.ovl2_error) C.enum_ovl2_status {
		return C.ovl2_open(chome, &c.opts, &d, e)
	})
	if err != nil {
		return nil, err
	}
	return &Driver{d: d}, nil
}

// Close releases the store, waiting for calls in flight. Later calls return ErrClosed.
// References this handle took with Get are released (a layer nobody else holds is
// unmounted); persistent references (GetWith) stay. Closing twice is harmless.
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	C.ovl2_close(d.d)
	d.d = nil
	return nil
}

// with runs f on the live handle, or returns ErrClosed.
func (d *Driver) with(f func(*C.ovl2_driver) error) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.d == nil {
		return ErrClosed
	}
	return f(d.d)
}

// Home is the store's absolute home directory ("" after Close).
func (d *Driver) Home() string {
	var h string
	_ = d.with(func(cd *C.ovl2_driver) error {
		h = C.GoString(C.ovl2_home(cd))
		return nil
	})
	return h
}

// CreateOpts are per-layer options, as Docker's graphdriver.CreateOpts.
type CreateOpts struct {
	MountLabel string            // SELinux label, used when the layer is mounted
	StorageOpt map[string]string // Docker's --storage-opt; overlay2 knows only "size"
}

// Create makes a read-only (image) layer id on parent ("" for a base layer). opts may be nil.
func (d *Driver) Create(id, parent string, opts *CreateOpts) error {
	return d.create("create", id, parent, opts, false)
}

// CreateReadWrite makes a read-write (container) layer; see Create.
func (d *Driver) CreateReadWrite(id, parent string, opts *CreateOpts) error {
	return d.create("create_rw", id, parent, opts, true)
}

func (d *Driver) create(op, id, parent string, opts *CreateOpts, rw bool) error {
	return d.with(func(cd *C.ovl2_driver) error {
		var a cargs
		defer a.free()
		cid, err := a.str(op, id, "id", id)
		if err != nil {
			return err
		}
		cparent, err := a.optStr(op, id, "parent", parent)
		if err != nil {
			return err
		}
		var co C.ovl2_create_opts
		C.ovl2_create_opts_init(&co)
		if opts != nil {
			if co.mount_label, err = a.optStr(op, id, "mount label", opts.MountLabel); err != nil {
				return err
			}
			if len(opts.StorageOpt) > 0 {
				arr, free, err := cStringArray(op, id, opts.StorageOpt)
				if err != nil {
					return err
				}
				defer free()
				co.storage_opt = arr
			}
		}
		return call(op, id, func(e **C.ovl2_error) C.enum_ovl2_status {
			if rw {
				return C.ovl2_create_rw(cd, cid, cparent, &co, e)
			}
			return C.ovl2_create(cd, cid, cparent, &co, e)
		})
	})
}

// cStringArray builds a NULL-terminated C array of "key=value" strings in C memory, in
// key order so errors name the same option every time.
func cStringArray(op, id string, m map[string]string) (**C.char, func(), error) {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if strings.IndexByte(k+v, 0) >= 0 {
			return nil, nil, &Error{Op: op, ID: id, Code: CodeInvalidArgument, Errno: syscall.EINVAL,
				Message: "storage option contains a NUL byte"}
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ptrSize := unsafe.Sizeof((*C.char)(nil))
	arr := (**C.char)(C.calloc(C.size_t(len(keys)+1), C.size_t(ptrSize)))
	items := unsafe.Slice(arr, len(keys)+1)
	for i, k := range keys {
		items[i] = C.CString(k + "=" + m[k])
	}
	return arr, func() {
		for _, p := range items {
			C.free(unsafe.Pointer(p))
		}
		C.free(unsafe.Pointer(arr))
	}, nil
}

// Remove deletes layer id. A layer other layers build on is refused with ErrBusy (see
// RemoveTree), and so is a mounted one.
func (d *Driver) Remove(id string) error { return d.RemoveWith(id, RemoveOpts{}) }

// ForceRemove deletes layer id, unmounting it first. A layer other layers build on is still
// refused with ErrBusy.
func (d *Driver) ForceRemove(id string) error { return d.RemoveWith(id, RemoveOpts{Force: true}) }

// RemoveOpts are the options of RemoveWith.
type RemoveOpts struct {
	// Force unmounts the layer first instead of refusing a mounted one.
	Force bool
	// IgnoreChildren removes the layer even when other layers build on it, as Docker's
	// graphdriver Remove does (it never looks at children). Those layers become orphans that
	// cannot mount; Check reports them. Only for adapters that must behave exactly like Docker.
	IgnoreChildren bool
}

// RemoveWith deletes layer id with the given options.
func (d *Driver) RemoveWith(id string, o RemoveOpts) error {
	var flags C.uint32_t
	if o.Force {
		flags |= C.OVL2_REMOVE_FORCE
	}
	if o.IgnoreChildren {
		flags |= C.OVL2_REMOVE_IGNORE_CHILDREN
	}
	return d.withID("remove", id, func(cd *C.ovl2_driver, cid *C.char, e **C.ovl2_error) C.enum_ovl2_status {
		return C.ovl2_remove_with(cd, cid, flags, e)
	})
}

// RemoveTree deletes layer id and every layer built on it, deepest first, so a crash midway
// never leaves a layer whose parent is gone. A mounted one makes it refuse with ErrBusy
// before anything is removed, unless force, which unmounts them first.
func (d *Driver) RemoveTree(id string, force bool) error {
	return d.withID("remove_tree", id, func(cd *C.ovl2_driver, cid *C.char, e **C.ovl2_error) C.enum_ovl2_status {
		return C.ovl2_remove_tree(cd, cid, C.bool(force), e)
	})
}

// RemoveTreeIDs is RemoveTree returning the removed ids in the order they went: deepest
// first, id last.
func (d *Driver) RemoveTreeIDs(id string, force bool) ([]string, error) {
	var flags C.uint32_t
	if force {
		flags = C.OVL2_REMOVE_FORCE
	}
	var l *C.ovl2_id_list
	err := d.withID("remove_tree", id, func(cd *C.ovl2_driver, cid *C.char, e **C.ovl2_error) C.enum_ovl2_status {
		return C.ovl2_remove_tree_with(cd, cid, flags, &l, e)
	})
	if err != nil {
		return nil, err
	}
	defer C.ovl2_id_list_free(l)
	out := make([]string, 0, l.len)
	for _, it := range unsafe.Slice(l.items, l.len) {
		out = append(out, C.GoString(it.id))
	}
	return out, nil
}

// Usage is what one layer's own files occupy on disk.
type Usage struct {
	Bytes  int64 // allocated bytes (st_blocks × 512, as du counts), every inode once
	Inodes int64 // distinct inodes: hardlinks once, the layer's diff directory included
}

// Usage measures layer id's own files (its diff directory, as `ovl2 du` and containerd's
// snapshot usage count), never crossing a mount or following a symlink. Unlike DiffSize
// (Docker's apparent size of the layer's changes) this is what the layer costs on disk.
func (d *Driver) Usage(id string) (Usage, error) {
	var u C.ovl2_layer_usage
	err := d.withID("usage", id, func(cd *C.ovl2_driver, cid *C.char, e **C.ovl2_error) C.enum_ovl2_status {
		return C.ovl2_usage(cd, cid, &u, e)
	})
	return Usage{Bytes: int64(u.bytes), Inodes: int64(u.inodes)}, err
}

// withID runs one C call that takes the driver and a layer id.
func (d *Driver) withID(op, id string, f func(*C.ovl2_driver, *C.char, **C.ovl2_error) C.enum_ovl2_status) error {
	cid, err := arg(op, id, "id", id)
	if err != nil {
		return err
	}
	return d.with(func(cd *C.ovl2_driver) error {
		return call(op, id, func(e **C.ovl2_error) C.enum_ovl2_status { return f(cd, cid, e) })
	})
}

// Exists reports whether layer id exists.
func (d *Driver) Exists(id string) (bool, error) {
	// Written out, without with's and call's closures: Exists is called per layer, often.
	cid, err := arg("exists", id, "id", id)
	if err != nil {
		return false, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.d == nil {
		return false, ErrClosed
	}
	var out C.bool
	var cerr *C.ovl2_error
	if st := C.ovl2_exists(d.d, cid, &out, &cerr); st != C.OVL2_STATUS_OK {
		return false, statusError("exists", id, st, cerr)
	}
	return bool(out), nil
}

// Parent returns the direct parent of id, "" for a base layer.
func (d *Driver) Parent(id string) (string, error) {
	var out *C.char
	err := d.withID("parent", id, func(cd *C.ovl2_driver, cid *C.char, e **C.ovl2_error) C.enum_ovl2_status {
		return C.ovl2_parent(cd, cid, &out, e)
	})
	if err != nil || out == nil {
		return "", err
	}
	defer C.ovl2_string_free(out)
	return C.GoString(out), nil
}

// Metadata holds the paths Docker's GetMetadata returns for a layer.
type Metadata struct {
	LowerDir  string // lower layers' diff dirs, nearest first, joined by ":"; "" for a base layer
	UpperDir  string
	WorkDir   string
	MergedDir string
}

// Map returns the metadata as Docker's map (LowerDir only for layers with a parent).
func (m Metadata) Map() map[string]string {
	out := map[string]string{"UpperDir": m.UpperDir, "WorkDir": m.WorkDir, "MergedDir": m.MergedDir}
	if m.LowerDir != "" {
		out["LowerDir"] = m.LowerDir
	}
	return out
}

// Metadata returns the paths of layer id.
func (d *Driver) Metadata(id string) (Metadata, error) {
	var m *C.ovl2_metadata
	err := d.withID("metadata", id, func(cd *C.ovl2_driver, cid *C.char, e **C.ovl2_error) C.enum_ovl2_status {
		return C.ovl2_layer_metadata(cd, cid, &m, e)
	})
	if err != nil {
		return Metadata{}, err
	}
	defer C.ovl2_metadata_free(m)
	return Metadata{
		LowerDir:  goStringOrEmpty(m.lower_dir),
		UpperDir:  C.GoString(m.upper_dir),
		WorkDir:   C.GoString(m.work_dir),
		MergedDir: C.GoString(m.merged_dir),
	}, nil
}

func goStringOrEmpty(p *C.char) string {
	if p == nil {
		return ""
	}
	return C.GoString(p)
}

// Status returns Docker's status pairs ("Backing Filesystem", "Supports d_type", ...)
// followed by ovl2's ("Home", "Layers", "Max depth", ...), in order.
func (d *Driver) Status() ([][2]string, error) {
	var l *C.ovl2_kv_list
	err := d.with(func(cd *C.ovl2_driver) error {
		return call("status", "", func(e **C.ovl2_error) C.enum_ovl2_status {
			return C.ovl2_driver_status(cd, &l, e)
		})
	})
	if err != nil {
		return nil, err
	}
	defer C.ovl2_kv_list_free(l)
	out := make([][2]string, 0, l.len)
	for _, kv := range unsafe.Slice(l.items, l.len) {
		out = append(out, [2]string{C.GoString(kv.key), C.GoString(kv.value)})
	}
	return out, nil
}

// Layer is one layer as Layers reports it.
type Layer struct {
	ID      string
	Parent  string // "" for a base layer
	Depth   int    // number of lower layers: 0 for a base layer
	ShortID string // the name under l/; "" when the link file is unreadable
	// Orphan: not a base layer, but its parent is gone from the store (Parent is then "" and
	// it cannot mount); Check names the command that resolves it.
	Orphan bool
}

// Layers lists every layer in the store, sorted by id.
func (d *Driver) Layers() ([]Layer, error) {
	var l *C.ovl2_layer_list
	err := d.with(func(cd *C.ovl2_driver) error {
		return call("layers", "", func(e **C.ovl2_error) C.enum_ovl2_status {
			return C.ovl2_layers(cd, &l, e)
		})
	})
	if err != nil {
		return nil, err
	}
	defer C.ovl2_layer_list_free(l)
	out := make([]Layer, 0, l.len)
	for _, x := range unsafe.Slice(l.items, l.len) {
		out = append(out, Layer{
			ID:      C.GoString(x.id),
			Parent:  goStringOrEmpty(x.parent),
			Depth:   int(x.depth),
			ShortID: goStringOrEmpty(x.short_id),
			Orphan:  bool(x.orphan),
		})
	}
	return out, nil
}

// ProblemKind names what kind of damage a Problem is ("missing_short_link", ...).
type ProblemKind string

// Problem is one thing Check found.
type Problem struct {
	Layer      string // "" when not about one layer
	Kind       ProblemKind
	Detail     string
	Repairable bool
}

func goProblems(l C.ovl2_problem_list) []Problem {
	out := make([]Problem, 0, l.len)
	for _, p := range unsafe.Slice(l.items, l.len) {
		out = append(out, Problem{
			Layer:      goStringOrEmpty(p.layer),
			Kind:       ProblemKind(C.GoString(C.ovl2_problem_kind_name(C.int(p.kind)))),
			Detail:     C.GoString(p.detail),
			Repairable: bool(p.repairable),
		})
	}
	return out
}

// Check scans the store and reports what a crash or another tool left behind, changing
// nothing. An empty result means the store is sound.
func (d *Driver) Check() ([]Problem, error) {
	var l *C.ovl2_problem_list
	err := d.with(func(cd *C.ovl2_driver) error {
		return call("check", "", func(e **C.ovl2_error) C.enum_ovl2_status {
			return C.ovl2_check(cd, &l, e)
		})
	})
	if err != nil {
		return nil, err
	}
	defer C.ovl2_problem_list_free(l)
	return goProblems(*l), nil
}

// RepairReport says what Repair fixed and what remains.
type RepairReport struct {
	Repaired  []Problem
	Remaining []Problem
}

// Repair fixes what Check reports as repairable; it never deletes a layer directory.
func (d *Driver) Repair() (RepairReport, error) {
	var r *C.ovl2_repair_report
	err := d.with(func(cd *C.ovl2_driver) error {
		return call("repair", "", func(e **C.ovl2_error) C.enum_ovl2_status {
			return C.ovl2_repair(cd, &r, e)
		})
	})
	if err != nil {
		return RepairReport{}, err
	}
	defer C.ovl2_repair_report_free(r)
	return RepairReport{Repaired: goProblems(r.repaired), Remaining: goProblems(r.remaining)}, nil
}

// MountOpts are the options of GetWith.
type MountOpts struct {
	MountLabel string // SELinux label, passed as context="..."
	ReadOnly   bool   // mount without an upper even when the layer is not committed
	Volatile   bool   // mount with "volatile" (no syncs to the upper): throwaway containers only
	// Persistent makes the reference belong to the store rather than this process: it
	// survives the process and is released only by a Put (from any process).
	Persistent bool
}

// Get mounts layer id (or takes another reference to its mount) and returns the path to
// use: <home>/<id>/merged, or <home>/<id>/diff for a base layer, which is not mounted (as
// in Docker). Every successful Get needs one Put.
func (d *Driver) Get(id, mountLabel string) (string, error) {
	// ovl2_get, not GetWith's ovl2_get_with: no options struct to initialise through cgo.
	cid, err := arg("get", id, "id", id)
	if err != nil {
		return "", err
	}
	label, err := optArg("get", id, "mount label", mountLabel)
	if err != nil {
		return "", err
	}
	var out *C.char
	err = d.with(func(cd *C.ovl2_driver) error {
		return call("get", id, func(e **C.ovl2_error) C.enum_ovl2_status {
			return C.ovl2_get(cd, cid, label, &out, e)
		})
	})
	if err != nil {
		return "", err
	}
	defer C.ovl2_string_free(out)
	return C.GoString(out), nil
}

// GetWith is Get with every option; opts may be nil.
func (d *Driver) GetWith(id string, opts *MountOpts) (string, error) {
	var out *C.char
	err := d.with(func(cd *C.ovl2_driver) error {
		var a cargs
		defer a.free()
		cid, err := a.str("get", id, "id", id)
		if err != nil {
			return err
		}
		var mo C.ovl2_mount_opts
		C.ovl2_mount_opts_init(&mo)
		if opts != nil {
			if mo.mount_label, err = a.optStr("get", id, "mount label", opts.MountLabel); err != nil {
				return err
			}
			mo.readonly = cflag(opts.ReadOnly)
			mo.volatile_mount = cflag(opts.Volatile)
			mo.persistent = cflag(opts.Persistent)
		}
		return call("get", id, func(e **C.ovl2_error) C.enum_ovl2_status {
			return C.ovl2_get_with(cd, cid, &mo, &out, e)
		})
	})
	if err != nil {
		return "", err
	}
	defer C.ovl2_string_free(out)
	return C.GoString(out), nil
}

// Put drops one reference to layer id's mount and unmounts when none is left. A base
// layer's Put does nothing; a layer that is not mounted gives ErrInvalidArgument.
func (d *Driver) Put(id string) error {
	return d.withID("put", id, func(cd *C.ovl2_driver, cid *C.char, e **C.ovl2_error) C.enum_ovl2_status {
		return C.ovl2_put(cd, cid, e)
	})
}

// Mount is one mounted layer, as Mounts reports it.
type Mount struct {
	ID         string
	Path       string // <home>/<id>/merged
	Count      uint64 // all references
	Persistent uint64 // references held by the store
	Processes  uint64 // references held by live processes
	ReadOnly   bool
	Method     string // "new-fd", "legacy-relative", ...
	Mounted    bool   // whether the kernel really has it mounted
}

// Mounts lists every layer of the store that is mounted, by any process.
func (d *Driver) Mounts() ([]Mount, error) {
	var l *C.ovl2_mount_list
	err := d.with(func(cd *C.ovl2_driver) error {
		return call("mounts", "", func(e **C.ovl2_error) C.enum_ovl2_status {
			return C.ovl2_mounts(cd, &l, e)
		})
	})
	if err != nil {
		return nil, err
	}
	defer C.ovl2_mount_list_free(l)
	out := make([]Mount, 0, l.len)
	for _, m := range unsafe.Slice(l.items, l.len) {
		out = append(out, Mount{
			ID:         C.GoString(m.id),
			Path:       C.GoString(m.path),
			Count:      uint64(m.count),
			Persistent: uint64(m.persistent),
			Processes:  uint64(m.processes),
			ReadOnly:   bool(m.readonly),
			Method:     C.GoString(m.method),
			Mounted:    bool(m.mounted),
		})
	}
	return out, nil
}

// Cleanup unmounts every layer of the store, whoever holds it, and forgets all references
// (Docker's Cleanup).
func (d *Driver) Cleanup() error {
	return d.with(func(cd *C.ovl2_driver) error {
		return call("cleanup", "", func(e **C.ovl2_error) C.enum_ovl2_status {
			return C.ovl2_cleanup(cd, e)
		})
	})
}
