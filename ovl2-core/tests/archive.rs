//! Layer archives end to end: the shared bodies in `faces/archive.rs` on the Rust face
//! (`ovl2-ffi/tests/archive.rs` runs them on the C face).

mod common;
#[path = "common/docker_tool.rs"]
mod docker_tool;
#[macro_use]
mod faces;
#[path = "common/tarb.rs"]
mod tarb;

macro_rules! face_test {
    ($name:ident) => {
        face_test_on!(rust = ovl2_core::Driver, $name);
    };
}

#[path = "faces/archive.rs"]
mod shared;
