//! How a failed command is reported: one line `ovl2: MESSAGE` on stderr, or with `--json` one
//! object `{"error": {"kind", "message", "errno"}}`, and the exit status that goes with it.

use std::io::{self, Write};
use std::process::ExitCode;

use ovl2_core::{Error, ErrorKind};

/// Exit status of a command that failed.
pub(crate) const FAILED: u8 = 1;
/// Exit status of a command line that could not be understood (clap's own code).
pub(crate) const USAGE: u8 = 2;

/// A command's result: what it failed with, ready to print.
pub(crate) type Res<T> = Result<T, Failure>;

/// A failed command, in the words the CLI prints.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The `kind` of the JSON error: core's [`ErrorKind`] in snake_case, or `usage`.
    kind: &'static str,
    message: String,
    errno: Option<i32>,
}

impl Failure {
    /// A failure of `kind` (core's classes, so scripts match one set of names).
    pub(crate) fn new(kind: ErrorKind, message: String, errno: Option<i32>) -> Failure {
        Failure { kind: kind_name(kind), message, errno }
    }

    /// A command line that parsed but means nothing (`--storage-opt x`): exit status 2.
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure { kind: "usage", message: message.into(), errno: None }
    }

    /// Whether this is a usage error (exit status 2).
    pub(crate) fn is_usage(&self) -> bool {
        self.kind == "usage"
    }

    /// Core's "layer X does not exist" for the layer the user gave as `role` (`parent`,
    /// `image`) says so: the id alone reads as if the layer being made were missing.
    pub(crate) fn naming(e: Error, id: Option<&str>, role: &str) -> Failure {
        match (&e, id) {
            (Error::NotFound(missing), Some(id)) if missing == id => {
                Failure::new(e.kind(), format!("{role} layer {id:?} does not exist"), e.errno())
            }
            _ => e.into(),
        }
    }

    /// The failure with what was being done (the file) in front of its message.
    pub(crate) fn context(mut self, what: &str) -> Failure {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// Prints the failure on stderr, as text or as one line of JSON.
    pub(crate) fn report(&self, json: bool) {
        let mut err = io::stderr().lock();
        let _ = if json {
            #[derive(serde::Serialize)]
            struct Body<'a> {
                kind: &'a str,
                message: &'a str,
                errno: Option<i32>,
            }
            #[derive(serde::Serialize)]
            struct Wrapped<'a> {
                error: Body<'a>,
            }
            let body = Body { kind: self.kind, message: &self.message, errno: self.errno };
            let line = serde_json::to_string(&Wrapped { error: body }).unwrap_or_default();
            writeln!(err, "{line}")
        } else {
            writeln!(err, "ovl2: {}", self.message)
        };
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::new(e.kind(), e.to_string(), e.errno())
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        let kind = match e.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => ErrorKind::Permission,
            io::ErrorKind::AlreadyExists => ErrorKind::Exists,
            _ => ErrorKind::Io,
        };
        Failure::new(kind, e.to_string(), e.raw_os_error())
    }
}

impl From<serde_json::Error> for Failure {
    /// Serialization fails only on what JSON cannot carry (a path that is not UTF-8).
    fn from(e: serde_json::Error) -> Failure {
        Failure::new(ErrorKind::InvalidArgument, e.to_string(), Some(22))
    }
}

/// The stable snake_case name of a core error class, used as the JSON error's `kind`.
pub(crate) fn kind_name(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::InvalidArgument => "invalid_argument",
        ErrorKind::NotFound => "not_found",
        ErrorKind::Exists => "exists",
        ErrorKind::MaxDepth => "max_depth",
        ErrorKind::Busy => "busy",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::Permission => "permission",
        ErrorKind::Corrupt => "corrupt",
        ErrorKind::CorruptArchive => "corrupt_archive",
        _ => "io",
    }
}

/// A command line clap refused: its own report (exit 2), or with `--json` anywhere in the
/// arguments the same JSON error object as every other failure. `--help` and `--version`
/// print as usual and exit 0.
pub(crate) fn usage_error(e: clap::Error) -> ExitCode {
    let json = std::env::args_os().skip(1).take_while(|a| a != "--").any(|a| a == "--json");
    if !e.use_stderr() || !json {
        e.exit();
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    Failure::usage(first.strip_prefix("error: ").unwrap_or(first)).report(true);
    ExitCode::from(USAGE)
}
