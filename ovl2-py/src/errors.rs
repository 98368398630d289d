//! The one place where ovl2-core errors become Python exceptions.
//!
//! The exception classes live in `ovl2/_errors.py` so their hierarchy (every class is an
//! `OSError`, `InvalidIdError` also a `ValueError`) is plain Python, readable and documented
//! where users look. This adapter only picks the class from [`ErrorKind`] and raises it as
//! `Class(errno, message)`, which sets `.errno` and `.strerror` like any `OSError`.

use ovl2_core::{Error, ErrorKind};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

/// The Python class name for an error, by kind.
fn class_name(err: &Error) -> &'static str {
    match err.kind() {
        // A bad id is the common case and the one callers want to catch by name.
        ErrorKind::InvalidArgument if matches!(err, Error::InvalidId { .. }) => "InvalidIdError",
        ErrorKind::InvalidArgument => "InvalidArgumentError",
        ErrorKind::NotFound => "LayerNotFoundError",
        ErrorKind::Exists => "LayerExistsError",
        ErrorKind::MaxDepth => "MaxDepthError",
        ErrorKind::Busy => "BusyError",
        ErrorKind::Unsupported => "UnsupportedError",
        ErrorKind::Permission => "PermissionDeniedError",
        ErrorKind::Corrupt => "CorruptStoreError",
        ErrorKind::CorruptArchive => "CorruptArchiveError",
        _ => "Error",
    }
}

/// Converts a core error into the matching `ovl2` exception.
pub(crate) fn to_pyerr(py: Python<'_>, err: Error) -> PyErr {
    static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let raise = || -> PyResult<PyErr> {
        let module = ERRORS.get_or_try_init(py, || py.import("ovl2._errors").map(Bound::unbind))?;
        let class = module.bind(py).getattr(class_name(&err))?;
        let message = err.to_string();
        let exc = match err.errno() {
            Some(errno) => class.call1((errno, message))?,
            None => class.call1((message,))?,
        };
        Ok(PyErr::from_value(exc))
    };
    // Failing to build the exception (ovl2._errors missing) must still surface the message.
    raise().unwrap_or_else(|e| PyRuntimeError::new_err(format!("{err} (and raising it failed: {e})")))
}
