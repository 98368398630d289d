module example.invalid/ovl2/examples/go

go 1.22
