//! A tar header writer that reproduces Go's `archive/tar` byte for byte for the headers
//! Docker's native Diff writes (`Format = PAX`, whole-second mtimes, no atime/ctime/uname/
//! gname): a plain USTAR header when every field fits, otherwise a PAX `x` record with just
//! the fields that need it, then the main header.

use std::collections::BTreeMap;
use std::io::{self, Write};

const BLOCK: usize = 512;

/// One header as Docker's Diff builds it.
pub(crate) struct Header<'a> {
    pub name: &'a [u8],
    pub link: &'a [u8],
    pub flag: u8,
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    pub size: i64,
    /// `None` is Go's zero `time.Time`, written as 0.
    pub mtime: Option<i64>,
    pub devmajor: i64,
    pub devminor: i64,
    /// PAX records beyond the basic fields (Docker: only `SCHILY.xattr.security.capability`).
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
}

fn fits_octal(n: usize, x: i64) -> bool {
    let bits = (n - 1) * 3;
    x >= 0 && (n >= 22 || x < 1i64 << bits)
}

fn format_string(b: &mut [u8], s: &[u8]) {
    let n = s.len().min(b.len());
    b[..n].copy_from_slice(&s[..n]);
    if s.len() < b.len() {
        b[s.len()] = 0;
    }
    // Go keeps a truncated regular-file name from looking like a directory.
    if s.len() > b.len() && b[b.len() - 1] == b'/' {
        let mut m = b.len() - 1;
        while m > 0 && s[m - 1] == b'/' {
            m -= 1;
        }
        b[m] = 0;
    }
}

fn format_octal(b: &mut [u8], x: i64) {
    let x = if fits_octal(b.len(), x) { x } else { 0 };
    let s = format!("{x:o}");
    let pad = b.len().saturating_sub(s.len() + 1);
    let mut v = vec![b'0'; pad];
    v.extend_from_slice(s.as_bytes());
    format_string(b, &v);
}

fn to_ascii(s: &[u8]) -> Vec<u8> {
    s.iter().copied().filter(|&c| c < 0x80 && c != 0).collect()
}

/// Go's `splitUSTARPath`: a prefix (<= 155) and name (<= 100) split at a `/`.
fn split_ustar(name: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut length = name.len();
    if length <= 100 || !name.is_ascii() {
        return None;
    } else if length > 156 {
        length = 156;
    } else if name[length - 1] == b'/' {
        length -= 1;
    }
    let i = name[..length].iter().rposition(|&b| b == b'/')?;
    let nlen = name.len() - i - 1;
    if i == 0 || nlen > 100 || nlen == 0 || i > 155 {
        return None;
    }
    Some((&name[..i], &name[i + 1..]))
}

fn pax_record(k: &[u8], v: &[u8]) -> Vec<u8> {
    let mut size = k.len() + v.len() + 3;
    size += size.to_string().len();
    let mk = |size: usize| {
        let mut r = size.to_string().into_bytes();
        r.push(b' ');
        r.extend_from_slice(k);
        r.push(b'=');
        r.extend_from_slice(v);
        r.push(b'\n');
        r
    };
    let r = mk(size);
    if r.len() != size {
        return mk(r.len());
    }
    r
}

fn set_format(b: &mut [u8; BLOCK]) {
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    let sum: i64 = b.iter().enumerate().map(|(i, &c)| if (148..156).contains(&i) { 32 } else { c as i64 }).sum();
    format_octal(&mut b[148..155], sum);
    b[155] = b' ';
}

fn template(h: &Header<'_>, name: &[u8], link: &[u8]) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[156] = h.flag;
    format_string(&mut b[0..100], name);
    format_string(&mut b[157..257], link);
    format_octal(&mut b[100..108], h.mode);
    format_octal(&mut b[108..116], h.uid);
    format_octal(&mut b[116..124], h.gid);
    format_octal(&mut b[124..136], h.size);
    format_octal(&mut b[136..148], h.mtime.unwrap_or(0));
    format_string(&mut b[265..297], b"");
    format_string(&mut b[297..329], b"");
    format_octal(&mut b[329..337], h.devmajor);
    format_octal(&mut b[337..345], h.devminor);
    b
}

/// `path.Join(dir, "PaxHeaders.0", file)` for the clean relative names Diff produces.
fn pax_name(name: &[u8]) -> Vec<u8> {
    let (dir, file) = match name.iter().rposition(|&b| b == b'/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (&b""[..], name),
    };
    let mut out = dir.to_vec();
    if !out.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(b"PaxHeaders.0");
    if !file.is_empty() {
        out.push(b'/');
        out.extend_from_slice(file);
    }
    out
}

/// Writes Go-identical tar headers and data to `W`.
pub(crate) struct Writer<W: Write> {
    pub w: W,
    /// Bytes of the current entry still to be written.
    remaining: u64,
    pad: usize,
}

impl<W: Write> Writer<W> {
    pub fn new(w: W) -> Self {
        Writer { w, remaining: 0, pad: 0 }
    }

    /// Writes a header; its `size` bytes of data must follow through [`Writer::data`].
    pub fn header(&mut self, h: &Header<'_>) -> io::Result<()> {
        if self.remaining != 0 {
            return Err(io::Error::other("tar entry data is short"));
        }
        let mut pax: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut ustar = true;
        if !h.name.is_ascii() || h.name.len() > 100 {
            if split_ustar(h.name).is_none() {
                ustar = false;
            }
            pax.insert(b"path".to_vec(), h.name.to_vec());
        }
        if !h.link.is_ascii() || h.link.len() > 100 {
            ustar = false;
            pax.insert(b"linkpath".to_vec(), h.link.to_vec());
        }
        for (key, v, n) in [(&b"uid"[..], h.uid, 8), (b"gid", h.gid, 8), (b"size", h.size, 12)] {
            if !fits_octal(n, v) {
                ustar = false;
                pax.insert(key.to_vec(), v.to_string().into_bytes());
            }
        }
        if let Some(t) = h.mtime {
            if !fits_octal(12, t) {
                ustar = false;
                pax.insert(b"mtime".to_vec(), t.to_string().into_bytes());
            }
        }
        for (k, v) in &h.records {
            ustar = false;
            pax.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if ustar {
            let (prefix, name) = split_ustar(h.name).unwrap_or((b"", h.name));
            let mut b = template(h, name, h.link);
            format_string(&mut b[345..500], prefix);
            set_format(&mut b);
            self.w.write_all(&b)?;
        } else {
            let mut data = Vec::new();
            for (k, v) in &pax {
                data.extend_from_slice(&pax_record(k, v));
            }
            let mut xname = to_ascii(&pax_name(h.name));
            xname.truncate(100);
            while xname.last() == Some(&b'/') {
                xname.pop();
            }
            let mut b = [0u8; BLOCK];
            b[156] = b'x';
            format_string(&mut b[0..100], &xname);
            format_octal(&mut b[100..108], 0);
            format_octal(&mut b[108..116], 0);
            format_octal(&mut b[116..124], 0);
            format_octal(&mut b[124..136], data.len() as i64);
            format_octal(&mut b[136..148], 0);
            set_format(&mut b);
            self.w.write_all(&b)?;
            self.w.write_all(&data)?;
            self.w.write_all(&[0u8; BLOCK][..(BLOCK - data.len() % BLOCK) % BLOCK])?;
            let mut b = template(h, &to_ascii(h.name), &to_ascii(h.link));
            set_format(&mut b);
            self.w.write_all(&b)?;
        }
        let size = if matches!(h.flag, b'0' | b'\0' | b'7') { h.size.max(0) as u64 } else { 0 };
        self.remaining = size;
        self.pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        if size == 0 {
            self.pad = 0;
        }
        Ok(())
    }

    /// Writes entry data; the last call completes the entry's padding.
    pub fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.len() as u64 > self.remaining {
            return Err(io::Error::other("tar entry data is longer than its header says"));
        }
        self.w.write_all(buf)?;
        self.remaining -= buf.len() as u64;
        if self.remaining == 0 && self.pad != 0 {
            self.w.write_all(&[0u8; BLOCK][..self.pad])?;
            self.pad = 0;
        }
        Ok(())
    }

    /// Whether the current entry's data is complete.
    pub fn entry_done(&self) -> bool {
        self.remaining == 0
    }

    /// Writes Go's end of archive: two zero blocks, no record padding.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.remaining != 0 {
            return Err(io::Error::other("tar entry data is short"));
        }
        self.w.write_all(&[0u8; 2 * BLOCK])?;
        self.w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_names() {
        assert_eq!(pax_record(b"path", b"a"), b"9 path=a\n");
        // 4 + 91 + 3 = 98, plus two digits is 100, which itself needs three: 101.
        let r = pax_record(b"path", &[b'x'; 91]);
        assert_eq!((&r[..4], r.len()), (&b"101 "[..], 101));
        assert_eq!(pax_name(b"a/b/"), b"a/b/PaxHeaders.0");
        assert_eq!(pax_name(b"foo"), b"PaxHeaders.0/foo");
        assert_eq!(pax_name(b"a/foo"), b"a/PaxHeaders.0/foo");
        let long = [&[b'a'; 120][..], b"/", &[b'b'; 50]].concat();
        assert_eq!(split_ustar(&long), Some((&long[..120], &long[121..])));
        assert_eq!(split_ustar(b"short"), None);
    }
}
