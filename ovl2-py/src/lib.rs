//! Python bindings for ovl2. The pyo3 module lands with the Python issue; until then this
//! crate only links the core so the workspace layout is complete.

/// The version the Python package will report as `ovl2.__version__`.
pub fn version() -> &'static str {
    ovl2_core::VERSION
}
