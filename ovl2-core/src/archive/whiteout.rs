//! Whiteout and opaque-directory rules, in one place: how Docker's AUFS-style tar markers map
//! to overlay's on-disk form and back, and which xattrs a tar may never plant.

use std::ffi::CStr;

use rustix::fs::{FileType, Stat};

/// Prefix of an AUFS whiteout entry in a layer tar (`dir/.wh.NAME` deletes `dir/NAME`).
pub const WH_PREFIX: &[u8] = b".wh.";
/// Prefix of AUFS metadata entries (`.wh..wh.plnk`, `.wh..wh.aufs`, ...).
pub const WH_META_PREFIX: &[u8] = b".wh..wh.";
/// Base name of the opaque-directory marker in a layer tar.
pub const WH_OPAQUE: &[u8] = b".wh..wh..opq";

/// Opaque xattr overlay reads when mounted normally.
pub const OPAQUE_TRUSTED: &CStr = c"trusted.overlay.opaque";
/// Opaque xattr overlay reads when mounted with `userxattr` (in a user namespace).
pub const OPAQUE_USER: &CStr = c"user.overlay.opaque";

/// Xattr prefixes that belong to overlayfs itself. A tar that carries them could forge
/// opaque markers, redirects or metacopy origins, so apply drops them.
const OVERLAY_PRIVATE: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// Xattrs that make an upper directory something a native diff cannot express.
pub const REDIRECT_XATTRS: [&CStr; 4] =
    [c"trusted.overlay.redirect", c"user.overlay.redirect", c"trusted.overlay.metacopy", c"user.overlay.metacopy"];

/// What a tar entry's base name means under the AUFS whiteout rules.
#[derive(Debug, PartialEq, Eq)]
pub enum TarName<'a> {
    /// An ordinary entry.
    Plain,
    /// `.wh..wh..opq`: the containing directory is opaque.
    Opaque,
    /// `.wh.NAME`: `NAME` in the containing directory is deleted.
    Whiteout(&'a [u8]),
    /// Another `.wh..wh.*` AUFS metadata entry (hardlink farm and the like).
    AufsMeta,
    /// `.wh.`, `.wh..` or `.wh...`: would white out the directory itself or its parent.
    Invalid,
}

/// Classifies a base name. `top_level` says whether the entry sits in the layer root, where
/// AUFS keeps its metadata directories.
pub fn classify(base: &[u8], top_level: bool) -> TarName<'_> {
    if base == WH_OPAQUE {
        return TarName::Opaque;
    }
    if top_level && base.starts_with(WH_META_PREFIX) {
        return TarName::AufsMeta;
    }
    match base.strip_prefix(WH_PREFIX) {
        None => TarName::Plain,
        Some(b"" | b"." | b"..") => TarName::Invalid,
        Some(name) => TarName::Whiteout(name),
    }
}

/// Whether an xattr from a tar may be applied to the layer (overlay-private ones may not).
pub fn xattr_allowed(name: &[u8]) -> bool {
    !OVERLAY_PRIVATE.iter().any(|p| name.starts_with(p))
}

/// Whether `st` is an overlay whiteout: a character device 0:0.
pub fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

/// Whether an opaque xattr value marks a directory opaque (`y`; `x` only announces xwhiteouts).
pub fn is_opaque_value(v: &[u8]) -> bool {
    v == b"y"
}

/// The opaque xattr apply writes: `user.overlay.opaque` inside a user namespace (the mount
/// then uses `userxattr`, as Docker does), `trusted.overlay.opaque` otherwise.
pub fn opaque_xattr_for_apply() -> &'static CStr {
    if crate::kernel::in_user_namespace() {
        OPAQUE_USER
    } else {
        OPAQUE_TRUSTED
    }
}

/// The AUFS base name that exports the whiteout `name`.
pub fn whiteout_name(name: &[u8]) -> Vec<u8> {
    let mut v = WH_PREFIX.to_vec();
    v.extend_from_slice(name);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(classify(b"foo", false), TarName::Plain);
        assert_eq!(classify(b".wh..wh..opq", false), TarName::Opaque);
        assert_eq!(classify(b".wh..wh..opq", true), TarName::Opaque);
        assert_eq!(classify(b".wh.foo", false), TarName::Whiteout(b"foo"));
        assert_eq!(classify(b".wh..wh.plnk", true), TarName::AufsMeta);
        // Below the root the metadata prefix is an ordinary whiteout of ".wh.plnk" (Docker's quirk).
        assert_eq!(classify(b".wh..wh.plnk", false), TarName::Whiteout(b".wh.plnk"));
        for bad in [&b".wh."[..], b".wh..", b".wh..."] {
            assert_eq!(classify(bad, false), TarName::Invalid);
        }
        assert!(!xattr_allowed(b"trusted.overlay.redirect"));
        assert!(!xattr_allowed(b"user.overlay.opaque"));
        assert!(xattr_allowed(b"security.capability"));
        assert!(xattr_allowed(b"user.overlayfoo"));
    }
}
