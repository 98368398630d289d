//! C ABI for ovl2. Thin: converts types and errors only; all logic lives in ovl2-core.
//! The full driver surface lands with the C ABI issue; this crate already builds the
//! `libovl2` artefacts so the workspace layout is in place from the start.

use std::ffi::c_char;

/// The library version as a static NUL-terminated string. Never free it.
#[no_mangle]
pub extern "C" fn ovl2_version() -> *const c_char {
    static V: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    V.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_matches_core() {
        let v = unsafe { std::ffi::CStr::from_ptr(super::ovl2_version()) };
        assert_eq!(v.to_str().unwrap(), ovl2_core::VERSION);
    }
}
