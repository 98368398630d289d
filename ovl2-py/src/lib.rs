//! `ovl2._ovl2`: the native half of the Python package `ovl2`.
//!
//! A thin face over ovl2-core: it converts arguments and results, maps errors, and releases
//! the GIL around every call into the store so that Python threads working on one store run
//! in parallel. All behaviour lives in ovl2-core. By concept:
//! - [`driver`]: `Driver` and its methods, and the `mounted()` context manager;
//! - [`types`]: the records handed back (`Layer`, `Problem`, `Mount`, `ApplyStats`, ...);
//! - [`errors`]: core errors to the exception classes of `ovl2/_errors.py`;
//! - [`io`]: layer streams from and to paths, bytes, fds and file objects.

use pyo3::prelude::*;

use crate::driver::{Mounted, PyDriver};
use crate::types::{docker_init_entries, ApplyStats, DiffStats, Layer, Mount, Problem, Usage};

mod driver;
mod errors;
mod io;
mod types;

/// The native module `ovl2._ovl2`; import `ovl2` instead.
#[pymodule]
fn _ovl2(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("KERNEL_MAX_DEPTH", ovl2_core::KERNEL_MAX_DEPTH)?;
    m.add("DOCKER_MAX_DEPTH", ovl2_core::DOCKER_MAX_DEPTH)?;
    m.add_function(wrap_pyfunction!(docker_init_entries, m)?)?;
    m.add_class::<PyDriver>()?;
    m.add_class::<Layer>()?;
    m.add_class::<Problem>()?;
    m.add_class::<Mount>()?;
    m.add_class::<Mounted>()?;
    m.add_class::<ApplyStats>()?;
    m.add_class::<DiffStats>()?;
    m.add_class::<Usage>()?;
    Ok(())
}
