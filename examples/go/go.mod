// The Go quickstart: a program using the ovl2 package from this checkout.
module github.com/ovl2/ovl2/examples/go

go 1.22

require github.com/ovl2/ovl2/ovl2-go v0.0.0

replace github.com/ovl2/ovl2/ovl2-go => ../../ovl2-go
