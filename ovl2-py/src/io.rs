//! Layer streams from and to Python: a path, bytes, an int fd, or a binary file object.
//!
//! Paths, bytes and fds are read and written with the GIL released. A file object can only be
//! called with the GIL, so its reader and writer take it back for each chunk (the core reads
//! and writes in 256 KiB chunks). An exception raised by the file object is kept and
//! re-raised as it was, instead of the I/O error the core wraps it in.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyBlockingIOError, PyOSError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyInt, PyString};

/// Smallest read asked of a Python file object.
const FILE_CHUNK: usize = 1 << 20;

/// The first exception a Python file object raised during a call.
#[derive(Clone, Default)]
pub(crate) struct PyFailure(Arc<Mutex<Option<PyErr>>>);

impl PyFailure {
    fn keep(&self, err: PyErr) -> io::Error {
        let msg = err.to_string();
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(err);
        io::Error::other(msg)
    }

    /// The kept exception, if any.
    pub(crate) fn take(&self) -> Option<PyErr> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Why a stream call failed: the store, or opening the caller's path.
pub(crate) enum Failure {
    Core(ovl2_core::Error),
    Open(io::Error, PathBuf),
}

impl From<ovl2_core::Error> for Failure {
    fn from(e: ovl2_core::Error) -> Self {
        Failure::Core(e)
    }
}

/// An `OSError(errno, strerror, filename)` for a path the caller gave, so CPython picks
/// `FileNotFoundError` and friends.
pub(crate) fn open_error(err: io::Error, path: PathBuf) -> PyErr {
    match err.raw_os_error() {
        Some(errno) => PyOSError::new_err((errno, strerror(errno), path.into_os_string())),
        // Never a string where the errno goes: `OSError.errno` must be an int or None.
        None => PyOSError::new_err(format!("{err}: {}", path.display())),
    }
}

/// The C library's text for an errno, without Rust's " (os error N)" suffix.
fn strerror(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// A layer stream to read, as `apply_diff` accepts it.
pub(crate) enum Source {
    Path(PathBuf),
    Bytes(PyBackedBytes),
    Fd(OwnedFd),
    File(Py<PyAny>),
}

/// Where `diff` writes the tar.
pub(crate) enum Dest {
    Path(PathBuf),
    Fd(OwnedFd),
    File(Py<PyAny>),
}

/// A duplicate of the caller's fd: ours to close, sharing the file offset with theirs.
fn dup_fd(obj: &Bound<'_, PyAny>) -> PyResult<OwnedFd> {
    let fd: i32 = obj.extract()?;
    if fd < 0 {
        return Err(PyValueError::new_err(format!("file descriptor cannot be negative: {fd}")));
    }
    // SAFETY: F_DUPFD_CLOEXEC only reads its integer arguments; an fd that is not open fails
    // with EBADF instead of being touched.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(libc::EBADF);
        return Err(PyOSError::new_err((errno, strerror(errno))));
    }
    // SAFETY: `new` is a fresh descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn is_int(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>()
}

/// A path argument (str, bytes or `os.PathLike`), as `os.fsencode` turns it into bytes: a
/// str is encoded with the filesystem encoding and surrogateescape, bytes are taken as they
/// are, so a path that is not UTF-8 reaches the kernel unchanged. A NUL in it raises
/// `ValueError("embedded null byte")`, as Python's own `os` functions do, instead of reaching
/// a system call.
pub(crate) fn fs_path(obj: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let py = obj.py();
    // os.fspath: str and bytes as they are, PathLike through __fspath__ (which may give bytes).
    let p = py.import(intern!(py, "os"))?.getattr(intern!(py, "fspath"))?.call1((obj,))?;
    let p: PathBuf = match p.cast::<PyBytes>() {
        Ok(b) => std::ffi::OsStr::from_bytes(b.as_bytes()).into(),
        Err(_) => p.extract()?,
    };
    if p.as_os_str().as_bytes().contains(&0) {
        return Err(PyValueError::new_err("embedded null byte"));
    }
    Ok(p)
}

fn is_path(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(obj.is_instance_of::<PyString>() || obj.hasattr(intern!(obj.py(), "__fspath__"))?)
}

impl Source {
    /// Sorts out what the caller passed.
    pub(crate) fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Source> {
        if is_int(obj) {
            Ok(Source::Fd(dup_fd(obj)?))
        } else if obj.is_instance_of::<PyBytes>() || obj.is_instance_of::<PyByteArray>() {
            Ok(Source::Bytes(obj.extract()?))
        } else if is_path(obj)? {
            Ok(Source::Path(fs_path(obj)?))
        } else if obj.hasattr(intern!(obj.py(), "read"))? {
            Ok(Source::File(obj.clone().unbind()))
        } else {
            Err(PyTypeError::new_err(format!(
                "source must be a path, bytes, a binary file object or an int fd, not {}",
                obj.get_type().name()?
            )))
        }
    }

    /// Opens the source and hands a reader to `f`; call without the GIL.
    pub(crate) fn with_reader<T>(
        self,
        failure: &PyFailure,
        f: impl FnOnce(&mut dyn Read) -> ovl2_core::Result<T>,
    ) -> Result<T, Failure> {
        Ok(f(&mut self.into_reader(failure)?)?)
    }

    /// Opens the source as a reader that owns it, for calls that take several streams at
    /// once; call without the GIL.
    pub(crate) fn into_reader(self, failure: &PyFailure) -> Result<Box<dyn Read + Send>, Failure> {
        Ok(match self {
            Source::Path(p) => Box::new(File::open(&p).map_err(|e| Failure::Open(e, p))?),
            Source::Bytes(b) => Box::new(io::Cursor::new(b)),
            Source::Fd(fd) => Box::new(File::from(fd)),
            Source::File(file) => Box::new(PyReader { file, failure: failure.clone(), pending: Vec::new(), at: 0 }),
        })
    }
}

impl Dest {
    /// Sorts out what the caller passed.
    pub(crate) fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Dest> {
        if is_int(obj) {
            Ok(Dest::Fd(dup_fd(obj)?))
        } else if is_path(obj)? {
            Ok(Dest::Path(fs_path(obj)?))
        } else if obj.hasattr(intern!(obj.py(), "write"))? {
            Ok(Dest::File(obj.clone().unbind()))
        } else {
            Err(PyTypeError::new_err(format!(
                "dest must be a path, a binary file object or an int fd, not {}",
                obj.get_type().name()?
            )))
        }
    }

    /// Opens (creating or truncating a path) and hands a writer to `f`; call without the GIL.
    pub(crate) fn with_writer<T>(
        self,
        failure: &PyFailure,
        f: impl FnOnce(&mut dyn Write) -> ovl2_core::Result<T>,
    ) -> Result<T, Failure> {
        Ok(match self {
            Dest::Path(p) => {
                let mut file = File::create(&p).map_err(|e| Failure::Open(e, p))?;
                f(&mut file)?
            }
            Dest::Fd(fd) => f(&mut File::from(fd))?,
            Dest::File(file) => f(&mut PyWriter { file, failure: failure.clone() })?,
        })
    }
}

/// Reads a Python binary file object through its `read` method.
struct PyReader {
    file: Py<PyAny>,
    failure: PyFailure,
    /// What a `read` returned beyond the buffer it was for.
    pending: Vec<u8>,
    at: usize,
}

impl Read for PyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.pending.len() {
            let chunk = Python::attach(|py| -> PyResult<Option<Vec<u8>>> {
                // Ctrl-C interrupts an apply from a file object, as it would a Python loop.
                py.check_signals()?;
                // Ask for at least 1 MiB: each call has to win the GIL back, which costs up
                // to a switch interval (5 ms) when other Python threads are busy.
                let want = buf.len().max(FILE_CHUNK);
                let got = self.file.bind(py).call_method1(intern!(py, "read"), (want,))?;
                if got.is_none() {
                    return Ok(None);
                }
                let bytes: PyBackedBytes = got.extract()?;
                Ok(Some(bytes.to_vec()))
            })
            .map_err(|e| self.failure.keep(e))?;
            match chunk {
                None => {
                    let e = PyBlockingIOError::new_err("source file object has no data ready (non-blocking)");
                    return Err(self.failure.keep(e));
                }
                Some(c) => {
                    self.pending = c;
                    self.at = 0;
                }
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Writes to a Python binary file object through its `write` and `flush` methods.
struct PyWriter {
    file: Py<PyAny>,
    failure: PyFailure,
}

impl Write for PyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Python::attach(|py| -> PyResult<usize> {
            py.check_signals()?;
            let n = self.file.bind(py).call_method1(intern!(py, "write"), (PyBytes::new(py, buf),))?;
            if n.is_none() {
                // A raw file in non-blocking mode that took nothing.
                return Err(PyBlockingIOError::new_err("dest file object accepted no data (non-blocking)"));
            }
            let n: usize = n.extract()?;
            if n > buf.len() {
                return Err(PyValueError::new_err(format!("write() returned {n} for {} bytes", buf.len())));
            }
            Ok(n)
        })
        .map_err(|e| self.failure.keep(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        Python::attach(|py| -> PyResult<()> {
            let file = self.file.bind(py);
            if file.hasattr(intern!(py, "flush"))? {
                file.call_method0(intern!(py, "flush"))?;
            }
            Ok(())
        })
        .map_err(|e| self.failure.keep(e))
    }
}
