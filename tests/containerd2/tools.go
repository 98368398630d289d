//go:build tools

// Package containerd2 pins containerd 2.x: its binaries (containerd, ctr, the runc shim) are
// built from this module by scripts/test-containerd2.sh, so go.sum fixes every byte of them.
package containerd2

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
