// Package dockerinterop holds tests only: it proves that Docker's own overlay2
// graph driver (github.com/docker/docker/daemon/graphdriver/overlay2) and the
// ovl2 CLI can read each other's stores. See interop_test.go and run.sh.
package dockerinterop
