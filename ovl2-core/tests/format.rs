//! The on-disk format, byte for byte and mode for mode, as Docker's overlay2 writes it: the
//! shared bodies in `faces/format.rs` on the Rust face (`ovl2-ffi/tests/format.rs` runs them
//! on the C face).

mod common;
#[macro_use]
mod faces;

macro_rules! face_test {
    ($name:ident) => {
        face_test_on!(rust = ovl2_core::Driver, $name);
    };
}

#[path = "faces/format.rs"]
mod shared;
