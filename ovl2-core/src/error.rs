//! Typed errors for every store operation.

use std::io;

/// Result alias used across ovl2-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A coarse classification of [`Error`], stable across releases; the C ABI and the
/// language bindings map it to their own status values and exception classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed something malformed (bad id, unknown option, ...).
    InvalidArgument,
    /// The layer, or the store home, the caller named does not exist ([`Error::NotFound`],
    /// [`Error::StoreNotFound`]). A file missing inside a layer or the store is not this
    /// (callers read it as "no such layer"): it is [`ErrorKind::Io`] with errno `ENOENT`.
    NotFound,
    /// A layer with that id already exists.
    Exists,
    /// The chain would exceed the configured maximum depth.
    MaxDepth,
    /// The layer is in use (has children, is mounted, is locked).
    Busy,
    /// The kernel or filesystem lacks something ovl2 needs.
    Unsupported,
    /// The operation is not permitted for this process.
    Permission,
    /// The on-disk store is damaged in a way the operation cannot work around.
    Corrupt,
    /// A layer archive (tar, gzip or zstd stream) is malformed, truncated or hostile.
    CorruptArchive,
    /// Any other I/O failure.
    Io,
}

/// Every failure ovl2-core reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A layer id broke one of the naming rules.
    #[error("invalid layer id {id:?}: {rule}")]
    InvalidId {
        /// The id as given.
        id: String,
        /// The rule it broke.
        rule: &'static str,
    },
    /// Some other argument was malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The layer does not exist.
    #[error("layer {0:?} does not exist")]
    NotFound(String),
    /// The store home the caller named does not exist (and the open mode may not create it).
    #[error("store home {} does not exist (a command that writes, or `ovl2 init`, creates it)", .0.display())]
    StoreNotFound(std::path::PathBuf),
    /// The layer already exists.
    #[error("layer {0:?} already exists")]
    Exists(String),
    /// Creating the layer would make its chain deeper than allowed.
    #[error("max depth exceeded: layer {id:?} would have {depth} lower layers, the limit is {limit}")]
    MaxDepth {
        /// The layer being created.
        id: String,
        /// The depth it would have: its number of lower layers ([`crate::depth_of`]).
        depth: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The layer is in use.
    #[error("layer {id:?} is busy: {reason}")]
    Busy {
        /// The layer in use.
        id: String,
        /// Why it cannot be changed now.
        reason: String,
    },
    /// The kernel or filesystem cannot do what was asked.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Something in the store is damaged.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A layer archive could not be applied: malformed, truncated, or refused as hostile.
    #[error("bad layer archive at {at}: {reason}")]
    CorruptArchive {
        /// Where: the entry name, or a byte offset in the stream.
        at: String,
        /// What was wrong.
        reason: String,
    },
    /// A system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What ovl2 was doing, naming the path involved.
        context: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The coarse class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidId { .. } | Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::NotFound(_) | Error::StoreNotFound(_) => ErrorKind::NotFound,
            Error::Exists(_) => ErrorKind::Exists,
            Error::MaxDepth { .. } => ErrorKind::MaxDepth,
            Error::Busy { .. } => ErrorKind::Busy,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Corrupt(_) => ErrorKind::Corrupt,
            Error::CorruptArchive { .. } => ErrorKind::CorruptArchive,
            Error::Io { source, .. } => {
                use rustix::io::Errno;
                match Errno::from_io_error(source) {
                    Some(Errno::PERM | Errno::ACCESS | Errno::ROFS) => ErrorKind::Permission,
                    Some(Errno::EXIST) => ErrorKind::Exists,
                    Some(Errno::BUSY) => ErrorKind::Busy,
                    Some(Errno::NOSYS | Errno::OPNOTSUPP) => ErrorKind::Unsupported,
                    // A walk that stopped at a mount point (fsutil::MountPoint).
                    None if source.kind() == io::ErrorKind::ResourceBusy => ErrorKind::Busy,
                    _ => ErrorKind::Io,
                }
            }
        }
    }

    /// The errno behind this error, when there is one (`ENOENT` for [`Error::NotFound`], ...),
    /// so C and Go callers can match on `errno` values as well as on the kind.
    pub fn errno(&self) -> Option<i32> {
        use rustix::io::Errno;
        let e = match self {
            Error::Io { source, .. } if source.kind() == io::ErrorKind::ResourceBusy => Errno::BUSY,
            Error::Io { source, .. } => return source.raw_os_error(),
            Error::InvalidId { .. } | Error::InvalidArgument(_) => Errno::INVAL,
            Error::NotFound(_) | Error::StoreNotFound(_) => Errno::NOENT,
            Error::Exists(_) => Errno::EXIST,
            Error::MaxDepth { .. } => Errno::TOOMANYREFS,
            Error::Busy { .. } => Errno::BUSY,
            Error::Unsupported(_) => Errno::OPNOTSUPP,
            Error::Corrupt(_) => Errno::UCLEAN,
            Error::CorruptArchive { .. } => Errno::BADMSG,
        };
        Some(e.raw_os_error())
    }

    /// The advice every "it is mounted" refusal gives, in the command line's words so a user
    /// can paste it (library callers read it as "put it").
    pub(crate) fn unmount_first(id: &str) -> String {
        format!("unmount it first (`ovl2 umount {id}`)")
    }

    pub(crate) fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io { context: context.into(), source: source.into() }
    }
}

/// Attaches a description of what was being done to a raw OS error.
pub(crate) trait Context<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T, E: Into<io::Error>> Context<T> for std::result::Result<T, E> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;

    /// Only "the layer (or store) you named does not exist" is NotFound; the faces turn it
    /// into LayerNotFound. A file missing inside the store keeps its errno but is plain Io.
    #[test]
    fn an_internal_enoent_is_io_not_not_found() {
        let e = Error::io("opening base/diff", Errno::NOENT);
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(e.errno(), Some(Errno::NOENT.raw_os_error()));
        assert_eq!(Error::NotFound("x".into()).kind(), ErrorKind::NotFound);
        let home = Error::StoreNotFound("/nowhere".into());
        assert_eq!(home.kind(), ErrorKind::NotFound);
        assert_eq!(home.errno(), Some(Errno::NOENT.raw_os_error()));
        assert!(home.to_string().starts_with("store home /nowhere does not exist"), "{home}");
    }
}
