//! The archive suite's shared bodies (`ovl2-core/tests/faces/archive.rs`) on the C face:
//! every call goes through the exported `ovl2_*` functions (see `capi/mod.rs`), tars in and
//! out through file descriptors.

#[path = "../../ovl2-core/tests/common/mod.rs"]
mod common;
#[path = "../../ovl2-core/tests/common/docker_tool.rs"]
mod docker_tool;
#[macro_use]
#[path = "../../ovl2-core/tests/faces/mod.rs"]
mod faces;
mod capi;
#[path = "../../ovl2-core/tests/common/tarb.rs"]
mod tarb;

macro_rules! face_test {
    ($name:ident) => {
        face_test_on!(c = crate::capi::CapiDriver, $name);
    };
}

#[path = "../../ovl2-core/tests/faces/archive.rs"]
mod shared;
