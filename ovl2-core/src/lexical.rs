//! Go's `filepath.Clean`, the one lexical path rule: Docker cleans tar names and its home path
//! with it, so ovl2 must clean both the same way to land on the same files.

/// The components of `path` after Go's `filepath.Clean`: empty and `.` components go, `..`
/// pops the one before it, and `..` at the root of a rooted path stays at the root. `None`
/// when a relative path climbs above its start (a rooted one never does).
pub(crate) fn clean(path: &[u8]) -> Option<Vec<&[u8]>> {
    let rooted = path.first() == Some(&b'/');
    let mut out: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.last().is_some_and(|l| *l != b"..") {
                    out.pop();
                } else if !rooted {
                    out.push(c);
                }
            }
            c => out.push(c),
        }
    }
    if out.first() == Some(&&b".."[..]) {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn cleans_like_go() {
        let c = |s: &str| clean(s.as_bytes()).map(|v| String::from_utf8(v.join(&b'/')).unwrap());
        assert_eq!(c("a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(c("/etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(c("/../../x").as_deref(), Some("x"));
        assert_eq!(c("./a//b/").as_deref(), Some("a/b"));
        assert_eq!(c("../x"), None);
        assert_eq!(c("a/../../x"), None);
        assert_eq!(c(".."), None);
        assert_eq!(c("./").as_deref(), Some(""));
        assert_eq!(c("/..").as_deref(), Some(""));
    }
}
