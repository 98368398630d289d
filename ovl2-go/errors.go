//go:build linux

package ovl2

/*
#include <ovl2.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"syscall"
)

// Code is the library's status code (ovl2_status in C). Values are stable.
type Code int

// Status codes, as in include/ovl2.h.
const (
	CodeOK              Code = C.OVL2_STATUS_OK
	CodeInvalidArgument Code = C.OVL2_STATUS_INVALID_ARGUMENT
	CodeNotFound        Code = C.OVL2_STATUS_NOT_FOUND
	CodeExists          Code = C.OVL2_STATUS_EXISTS
	CodeMaxDepth        Code = C.OVL2_STATUS_MAX_DEPTH
	CodeBusy            Code = C.OVL2_STATUS_BUSY
	CodeUnsupported     Code = C.OVL2_STATUS_UNSUPPORTED
	CodePermission      Code = C.OVL2_STATUS_PERMISSION
	CodeCorrupt         Code = C.OVL2_STATUS_CORRUPT
	CodeCorruptArchive  Code = C.OVL2_STATUS_CORRUPT_ARCHIVE
	CodeIO              Code = C.OVL2_STATUS_IO
	CodePanic           Code = C.OVL2_STATUS_PANIC
)

// String is the C name of the code ("NOT_FOUND", ...).
func (c Code) String() string { return C.GoString(C.ovl2_status_name(C.int(c))) }

// Sentinel errors to test with errors.Is. Every error the package returns for a failed
// library call is an *Error, which matches exactly one of these.
var (
	ErrInvalidArgument = errors.New("ovl2: invalid argument")
	ErrNotFound        = errors.New("ovl2: not found")
	ErrExists          = errors.New("ovl2: already exists")
	ErrMaxDepth        = errors.New("ovl2: max depth exceeded")
	ErrBusy            = errors.New("ovl2: busy")
	ErrUnsupported     = errors.New("ovl2: unsupported")
	ErrPermission      = errors.New("ovl2: permission denied")
	ErrCorrupt         = errors.New("ovl2: corrupt store")
	ErrCorruptArchive  = errors.New("ovl2: corrupt layer archive")
	ErrIO              = errors.New("ovl2: I/O error")
	ErrPanic           = errors.New("ovl2: internal error")
	// ErrClosed is returned by every method called after Driver.Close.
	ErrClosed = errors.New("ovl2: driver is closed")
)

var sentinels = map[Code]error{
	CodeInvalidArgument: ErrInvalidArgument,
	CodeNotFound:        ErrNotFound,
	CodeExists:          ErrExists,
	CodeMaxDepth:        ErrMaxDepth,
	CodeBusy:            ErrBusy,
	CodeUnsupported:     ErrUnsupported,
	CodePermission:      ErrPermission,
	CodeCorrupt:         ErrCorrupt,
	CodeCorruptArchive:  ErrCorruptArchive,
	CodeIO:              ErrIO,
	CodePanic:           ErrPanic,
}

// Error is a failed library call. errors.Is matches it against the Err* sentinel for its
// Code, and it unwraps to its syscall.Errno, so errors.Is(err, fs.ErrNotExist) and
// errors.As(err, &errno) work too.
type Error struct {
	Op      string        // the operation, e.g. "create"
	ID      string        // the layer concerned, when there is one
	Code    Code          // the library's status
	Errno   syscall.Errno // the errno behind it, or 0
	Message string        // the library's description
}

func (e *Error) Error() string {
	if e.ID != "" {
		return fmt.Sprintf("ovl2 %s %s: %s", e.Op, e.ID, e.Message)
	}
	return fmt.Sprintf("ovl2 %s: %s", e.Op, e.Message)
}

// Unwrap returns the errno, when there is one.
func (e *Error) Unwrap() error {
	if e.Errno == 0 {
		return nil
	}
	return e.Errno
}

// Is reports whether target is the sentinel for e.Code.
func (e *Error) Is(target error) bool {
	s, ok := sentinels[e.Code]
	return ok && s == target
}

// call runs one library function with a fresh error out-pointer and converts a failure.
// The error object is per call, so it does not matter which OS thread ran it.
func call(op, id string, f func(**C.ovl2_error) C.enum_ovl2_status) error {
	var cerr *C.ovl2_error
	st := f(&cerr)
	if st == C.OVL2_STATUS_OK {
		return nil
	}
	return statusError(op, id, st, cerr)
}

// statusError turns a failed call's status and error (which it frees) into an *Error.
func statusError(op, id string, st C.enum_ovl2_status, cerr *C.ovl2_error) error {
	defer C.ovl2_error_free(cerr)
	return &Error{
		Op:      op,
		ID:      id,
		Code:    Code(st),
		Errno:   syscall.Errno(C.ovl2_error_errno(cerr)),
		Message: C.GoString(C.ovl2_error_message(cerr)),
	}
}
