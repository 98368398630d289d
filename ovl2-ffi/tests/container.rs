//! The container suite's shared bodies (`ovl2-core/tests/faces/container.rs`) on the C face:
//! every call goes through the exported `ovl2_*` functions (see `capi/mod.rs`).

#[path = "../../ovl2-core/tests/common/mod.rs"]
mod common;
#[macro_use]
#[path = "../../ovl2-core/tests/faces/mod.rs"]
mod faces;
mod capi;

macro_rules! face_test {
    ($name:ident) => {
        face_test_on!(c = crate::capi::CapiDriver, $name);
    };
}

#[path = "../../ovl2-core/tests/faces/container.rs"]
mod shared;
