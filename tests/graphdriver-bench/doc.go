// Package graphdriverbench runs the benchmarks of Docker's own graphdriver test package
// (github.com/docker/docker/daemon/graphdriver/graphtest), with the names and parameters
// moby's overlay2 driver uses for them, against Docker's overlay2 driver and against ovl2
// (through its Go package and a graphdriver.Driver adapter) in one run. Not a test: run it
// with scripts/bench-graphdriver.sh, which also prints the side-by-side table.
package graphdriverbench
