//! Layer ids (the caller's names) and short ids (the 26-character names under `l/`).

use std::ffi::{CStr, CString};

use crate::error::{Error, Result};

/// Longest id accepted: one path component on every Linux filesystem.
pub const MAX_ID_LEN: usize = 255;

/// Length of a short id (Docker's `idLength`).
pub const SHORT_ID_LEN: usize = 26;

/// Names in `home` that belong to the store itself and so can never be layer ids.
/// `backingFsBlockDev` is Docker's xfs quota device.
const RESERVED: &[&str] = &["l", "backingFsBlockDev"];

/// Checks a caller-supplied layer id. Every rule keeps the id a single, plain entry of
/// `home` that cannot collide with the store's own entries.
pub fn validate(id: &str) -> Result<()> {
    let rule = if id.is_empty() {
        "must not be empty"
    } else if id.len() > MAX_ID_LEN {
        "must be at most 255 bytes"
    } else if id.contains('/') {
        "must not contain '/'"
    } else if id.contains('\0') {
        "must not contain NUL"
    } else if id == "." || id == ".." {
        "must not be '.' or '..'"
    } else if id.starts_with('.') {
        "must not start with '.' (reserved for ovl2's private entries)"
    } else if RESERVED.contains(&id) {
        "is reserved for the store's own entries"
    } else {
        return Ok(());
    };
    Err(Error::InvalidId { id: id.to_owned(), rule })
}

/// A layer id that passed [`validate`], carrying its C string for the `*at` system calls.
/// Made once where an id enters (a public method's argument, a listing of `home`, a link
/// target), so nothing below validates or converts it again. It reads as the `str` it is
/// (`Deref`), and its `Debug` is the string's, so messages quote it as before.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct LayerId {
    s: String,
    c: CString,
}

impl LayerId {
    /// Validates `id` ([`validate`]'s rules and errors).
    pub(crate) fn new(id: &str) -> Result<LayerId> {
        validate(id)?;
        // validate() refuses NUL, so this cannot fail.
        let c = CString::new(id).map_err(|_| Error::InvalidId { id: id.to_owned(), rule: "must not contain NUL" })?;
        Ok(LayerId { s: id.to_owned(), c })
    }

    /// A directory entry's name as a layer id, `None` when it cannot be one (listings of
    /// `home` and `.ovl2/mounts` skip such entries).
    pub(crate) fn from_entry(name: CString) -> Option<LayerId> {
        let s = name.to_str().ok()?.to_owned();
        validate(&s).ok()?;
        Some(LayerId { s, c: name })
    }

    /// Validates an optional id (a parent).
    pub(crate) fn opt(id: Option<&str>) -> Result<Option<LayerId>> {
        id.map(LayerId::new).transpose()
    }

    /// The id as a C string, for `openat(home, id)` and friends.
    pub(crate) fn as_c_str(&self) -> &CStr {
        &self.c
    }

    /// The id as a `str`.
    pub(crate) fn as_str(&self) -> &str {
        &self.s
    }
}

impl std::ops::Deref for LayerId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.s
    }
}

impl std::fmt::Debug for LayerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.s, f)
    }
}

impl std::fmt::Display for LayerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.s)
    }
}

impl AsRef<str> for LayerId {
    fn as_ref(&self) -> &str {
        &self.s
    }
}

impl AsRef<std::path::Path> for LayerId {
    fn as_ref(&self) -> &std::path::Path {
        self.s.as_ref()
    }
}

impl PartialEq<&str> for LayerId {
    fn eq(&self, other: &&str) -> bool {
        self.s == *other
    }
}

impl From<LayerId> for String {
    fn from(id: LayerId) -> String {
        id.s
    }
}

/// True when `s` is a well-formed short id: 26 characters of the RFC 4648 base32 alphabet.
pub fn is_short_id(s: &[u8]) -> bool {
    s.len() == SHORT_ID_LEN && s.iter().all(|c| matches!(c, b'A'..=b'Z' | b'2'..=b'7'))
}

/// Draws a fresh short id: 17 bytes from the OS random source, base32, first 26 characters,
/// as Docker does, so ovl2's ids are indistinguishable from Docker's.
pub fn new_short_id() -> Result<String> {
    let mut raw = [0u8; 17];
    let mut filled = 0;
    while filled < raw.len() {
        match rustix::rand::getrandom(&mut raw[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::io("reading the OS random source", e)),
        }
    }
    let mut id = base32(&raw);
    id.truncate(SHORT_ID_LEN);
    Ok(id)
}

/// RFC 4648 base32 without padding, as Go's `base32.StdEncoding` before Docker cuts it to 26.
fn base32(data: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"fo"), "MZXQ");
        assert_eq!(base32(b"foo"), "MZXW6");
        assert_eq!(base32(b"foob"), "MZXW6YQ");
        assert_eq!(base32(b"fooba"), "MZXW6YTB");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn short_ids_are_well_formed_and_distinct() {
        let a = new_short_id().unwrap();
        let b = new_short_id().unwrap();
        assert!(is_short_id(a.as_bytes()), "{a}");
        assert!(is_short_id(b.as_bytes()), "{b}");
        assert_ne!(a, b);
    }

    #[test]
    fn rejects_bad_ids_naming_the_rule() {
        let long = "a".repeat(256);
        for (id, needle) in [
            ("", "empty"),
            ("a/b", "'/'"),
            ("a\0b", "NUL"),
            (".", "'.'"),
            ("..", "'..'"),
            (".hidden", "start with '.'"),
            ("l", "reserved"),
            ("backingFsBlockDev", "reserved"),
            (long.as_str(), "255"),
        ] {
            let err = validate(id).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(needle), "{id:?}: {msg}");
        }
    }

    #[test]
    fn a_layer_id_is_validated_once_and_reads_as_its_string() {
        assert!(matches!(LayerId::new("a/b"), Err(Error::InvalidId { .. })));
        let id = LayerId::new("base").unwrap();
        assert_eq!(id.as_c_str(), c"base");
        assert_eq!(&*id, "base");
        assert_eq!(format!("{id:?} {id}"), "\"base\" base");
    }

    #[test]
    fn accepts_docker_ids() {
        let id = "3f39b8c8f0b0d5c4e4e5d3c7a1b2c3d4e5f60718293a4b5c6d7e8f9011223344";
        validate(id).unwrap();
        validate(&format!("{id}-init")).unwrap();
        validate(&"a".repeat(255)).unwrap();
        validate("l2").unwrap();
    }

    #[test]
    fn short_id_shape() {
        assert!(is_short_id(b"F74KTIZFM3OJPZ44L4Y5OMLQRY"));
        assert!(!is_short_id(b"F74KTIZFM3OJPZ44L4Y5OMLQR"));
        assert!(!is_short_id(b"F74KTIZFM3OJPZ44L4Y5OMLQRY\n"));
        assert!(!is_short_id(b"f74ktizfm3ojpz44l4y5omlqry"));
        assert!(!is_short_id(b""));
    }
}
