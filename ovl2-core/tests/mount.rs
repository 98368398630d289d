//! Real overlay mounts: the shared bodies in `faces/mount.rs` on the Rust face
//! (`ovl2-ffi/tests/mount.rs` runs them on the C face). They need root and overlayfs; under
//! CI=true they fail rather than skip.

mod common;
#[macro_use]
mod faces;

macro_rules! face_test {
    ($name:ident) => {
        face_test_on!(rust = ovl2_core::Driver, $name);
    };
}

#[path = "faces/mount.rs"]
mod shared;
