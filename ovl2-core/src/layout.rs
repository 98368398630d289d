//! The on-disk format, in one place: entry names, modes, and the `link`/`lower` encodings
//! exactly as Docker's overlay2 driver writes and reads them.

use std::ffi::CStr;

use rustix::fs::Mode;

use crate::id::{is_short_id, SHORT_ID_LEN};

/// Directory of short-id symlinks in `home`.
pub const LINK_DIR: &CStr = c"l";
/// A layer's upper directory: its contents in overlay form.
pub const DIFF: &CStr = c"diff";
/// A layer's overlay workdir (only when it has a parent).
pub const WORK: &CStr = c"work";
/// A layer's mount point (only while mounted).
pub const MERGED: &CStr = c"merged";
/// File holding the layer's short id.
pub const LINK: &CStr = c"link";
/// File holding the layer's lower chain (only when it has a parent).
pub const LOWER: &CStr = c"lower";
/// Empty marker: a child exists, so the layer mounts read-only from now on.
pub const COMMITTED: &CStr = c"committed";

/// ovl2's private directory in `home`. Its leading dot makes it an invalid layer id, so it
/// never collides with a layer, and Docker's driver never looks at it.
pub const PRIVATE_DIR: &CStr = c".ovl2";
/// Under [`PRIVATE_DIR`]: layers being built or torn down.
pub const STAGING: &CStr = c"staging";
/// Under [`PRIVATE_DIR`]: an always-empty directory, the second lower of a read-only
/// mount of a base layer (overlay needs two lowers when there is no upper).
pub const EMPTY: &CStr = c"empty";
/// Under [`PRIVATE_DIR`]: one mount reference record per mounted layer.
pub const MOUNT_RECORDS: &CStr = c"mounts";
/// Under [`PRIVATE_DIR`]: one file per `Driver` holding mounts, flocked while it lives
/// (see `mount::refs`).
pub const HOLDERS: &CStr = c"holders";
/// Under [`PRIVATE_DIR`]: one record per container being created, flocked by its creator and
/// naming the image top, so repair can finish the rollback of a creator that died.
pub const PENDING: &CStr = c"pending";
/// Under [`PRIVATE_DIR`]: the store lock file.
pub const LOCK: &CStr = c"lock";

/// Mode of `home` (Docker resets it at every init).
pub const HOME_MODE: Mode = Mode::from_raw_mode(0o710);
/// Mode of `home/l`.
pub const LINK_DIR_MODE: Mode = Mode::from_raw_mode(0o700);
/// Mode of `home/<id>`.
pub const LAYER_MODE: Mode = Mode::from_raw_mode(0o710);
/// Mode of `<id>/diff`.
pub const DIFF_MODE: Mode = Mode::from_raw_mode(0o755);
/// Mode of `<id>/work`.
pub const WORK_MODE: Mode = Mode::from_raw_mode(0o700);
/// Mode of `<id>/merged`.
pub const MERGED_MODE: Mode = Mode::from_raw_mode(0o700);
/// Mode of `link` and `lower`.
pub const META_FILE_MODE: Mode = Mode::from_raw_mode(0o644);
/// Mode of `committed`.
pub const COMMITTED_MODE: Mode = Mode::from_raw_mode(0o600);
/// Mode of ovl2's private directories.
pub const PRIVATE_MODE: Mode = Mode::from_raw_mode(0o700);
/// Mode of ovl2's private files: the store lock, mount records, holder and pending files.
pub const PRIVATE_FILE_MODE: Mode = Mode::from_raw_mode(0o600);

/// Target of `l/<short>`: relative, so a store can be moved or bind-mounted elsewhere.
pub fn link_target(id: &str) -> String {
    format!("../{id}/diff")
}

/// The layer id a `l/<short>` symlink points to, if the target has the expected shape.
pub fn id_from_link_target(target: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(target).ok()?;
    let id = s.strip_prefix("../")?.strip_suffix("/diff")?;
    (crate::id::validate(id).is_ok()).then_some(id)
}

/// Why a `link` or `lower` file's content is not usable as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    /// Empty file (a crash of pre-v25 Docker can leave this).
    Empty,
    /// Correct content plus surrounding whitespace: repairable by trimming.
    Whitespace,
    /// Anything else.
    Garbage(String),
}

impl Malformed {
    /// The sentence naming what is wrong with the `file` (`link` or `lower`) it was found in.
    pub fn describe(&self, file: &str) -> String {
        match self {
            Malformed::Empty => format!("{file} file is empty"),
            Malformed::Whitespace => format!("{file} file has stray whitespace"),
            Malformed::Garbage(s) => format!("{file} file is malformed: {s}"),
        }
    }
}

/// Parses a `link` file into the short id.
pub fn parse_link(content: &[u8]) -> Result<&str, Malformed> {
    if content.is_empty() {
        return Err(Malformed::Empty);
    }
    if is_short_id(content) {
        return Ok(std::str::from_utf8(content).expect("base32 is ascii"));
    }
    if is_short_id(content.trim_ascii()) {
        return Err(Malformed::Whitespace);
    }
    Err(Malformed::Garbage(format!(
        "expected {SHORT_ID_LEN} base32 characters, found {:?}",
        String::from_utf8_lossy(&content[..content.len().min(64)])
    )))
}

/// Parses a `lower` file into short ids, nearest parent first.
pub fn parse_lower(content: &[u8]) -> Result<Vec<&str>, Malformed> {
    if content.is_empty() {
        return Err(Malformed::Empty);
    }
    if let Some(v) = split_lower(content) {
        return Ok(v);
    }
    if split_lower(content.trim_ascii()).is_some() {
        return Err(Malformed::Whitespace);
    }
    Err(Malformed::Garbage(format!(
        "expected l/<short id> entries joined by ':', found {:?}",
        String::from_utf8_lossy(&content[..content.len().min(64)])
    )))
}

fn split_lower(c: &[u8]) -> Option<Vec<&str>> {
    c.split(|&b| b == b':')
        .map(|e| {
            let lid = e.strip_prefix(b"l/")?;
            is_short_id(lid).then(|| std::str::from_utf8(lid).expect("ascii"))
        })
        .collect()
}

/// Encodes a lower chain (nearest first) as Docker does: `l/A:l/B`, no trailing newline.
pub fn format_lower<S: AsRef<str>>(lids: &[S]) -> String {
    let mut out = String::with_capacity(lids.len() * (SHORT_ID_LEN + 3));
    for (i, lid) in lids.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str("l/");
        out.push_str(lid.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "F74KTIZFM3OJPZ44L4Y5OMLQRY";
    const B: &str = "MULYQ2ZJ7RXOKD6BMRFWZ3WB4Q";

    #[test]
    fn lower_round_trip() {
        let s = format_lower(&[A, B]);
        assert_eq!(s, format!("l/{A}:l/{B}"));
        assert_eq!(parse_lower(s.as_bytes()).unwrap(), vec![A, B]);
    }

    #[test]
    fn lower_rejects_docker_corruptions() {
        assert_eq!(parse_lower(b""), Err(Malformed::Empty));
        assert_eq!(parse_lower(format!("l/{A}\n").as_bytes()), Err(Malformed::Whitespace));
        assert!(matches!(parse_lower(b"l/"), Err(Malformed::Garbage(_))));
        assert!(matches!(parse_lower(format!("l/{A}::l/{B}").as_bytes()), Err(Malformed::Garbage(_))));
        assert!(matches!(parse_lower(format!("/abs/{A}").as_bytes()), Err(Malformed::Garbage(_))));
    }

    #[test]
    fn link_parse() {
        assert_eq!(parse_link(A.as_bytes()), Ok(A));
        assert_eq!(parse_link(b""), Err(Malformed::Empty));
        assert_eq!(parse_link(format!("{A}\n").as_bytes()), Err(Malformed::Whitespace));
        assert!(matches!(parse_link(b"short"), Err(Malformed::Garbage(_))));
    }

    #[test]
    fn link_target_shape() {
        assert_eq!(link_target("abc"), "../abc/diff");
        assert_eq!(id_from_link_target(b"../abc/diff"), Some("abc"));
        assert_eq!(id_from_link_target(b"../../etc/diff"), None);
        assert_eq!(id_from_link_target(b"/abs/abc/diff"), None);
        assert_eq!(id_from_link_target(b"../l/diff"), None);
    }
}
