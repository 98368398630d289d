module github.com/ovl2/ovl2/tests/archive-interop

go 1.24.0

require (
	github.com/moby/go-archive v0.1.0
	github.com/moby/sys/user v0.4.0
)

require (
	github.com/containerd/log v0.1.0 // indirect
	github.com/klauspost/compress v1.18.0 // indirect
	github.com/moby/patternmatcher v0.6.0 // indirect
	github.com/moby/sys/sequential v0.6.0 // indirect
	github.com/moby/sys/userns v0.1.0 // indirect
	github.com/sirupsen/logrus v1.9.3 // indirect
	golang.org/x/sys v0.31.0 // indirect
)
