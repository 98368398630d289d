// The Go package for libovl2. Its one canonical module path is the repository's path plus
// this directory; until the repository is published, point the path at a checkout with
// `go mod edit -replace github.com/ovl2/ovl2/ovl2-go=/path/to/ovl2/ovl2-go` (see README.md).
module github.com/ovl2/ovl2/ovl2-go

go 1.22
