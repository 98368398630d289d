// Package dockerinterop holds tests only: it proves that Docker's own overlay2
// graph driver (github.com/docker/docker/daemon/graphdriver/overlay2) and the
// ovl2 CLI can read each other's stores (interop_test.go), and that
// `ovl2 container create` makes the same container layers as Docker's layer
// store with Docker's own initlayer.Setup (container_test.go). See run.sh.
package dockerinterop
