//! Go's `archive/tar`, the parts Docker uses, reproduced in Rust so ovl2 sees exactly the
//! archive Docker sees:
//!
//! - a header writer that reproduces Go's output byte for byte for the headers Docker's
//!   native Diff writes (`Format = PAX`, whole-second mtimes, no atime/ctime/uname/gname): a
//!   plain USTAR header when every field fits, otherwise a PAX `x` record with just the
//!   fields that need it, then the main header;
//! - a reader with Go's framing and limits: the same zero-block rule for the end of the
//!   archive, the same header formats and numeric parsing, PAX records and GNU long names
//!   merged the same way, and no extension header over 1 MiB (Go's `maxSpecialFileSize`),
//!   checked before any of it is read, so memory stays bounded whatever a header claims.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

const BLOCK: usize = 512;

/// What an entry is, as its typeflag says: the one type apply reads and export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Reg,
    Link,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

impl Kind {
    /// The typeflag written for this kind (Go's `TypeReg` is `'0'`).
    pub fn flag(self) -> u8 {
        match self {
            Kind::Reg => b'0',
            Kind::Link => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        }
    }

    /// The kind a read typeflag names; `None` for everything else (extension headers, GNU
    /// sparse files, types Docker cannot unpack). `'\0'` is the pre-POSIX regular file.
    pub fn from_flag(flag: u8) -> Option<Kind> {
        Some(match flag {
            b'0' | b'\0' => Kind::Reg,
            b'1' => Kind::Link,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            _ => return None,
        })
    }

    /// The kind of a file on disk; `None` for a socket, which tar cannot carry.
    pub fn of(ft: rustix::fs::FileType) -> Option<Kind> {
        use rustix::fs::FileType as F;
        Some(match ft {
            F::RegularFile => Kind::Reg,
            F::Directory => Kind::Dir,
            F::Symlink => Kind::Symlink,
            F::CharacterDevice => Kind::Char,
            F::BlockDevice => Kind::Block,
            F::Fifo => Kind::Fifo,
            _ => return None,
        })
    }

    /// The entry type in words, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Reg => "regular file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
            Kind::Link => "hardlink",
            Kind::Char => "character device",
            Kind::Block => "block device",
            Kind::Fifo => "fifo",
        }
    }
}

/// One header as Docker's Diff builds it.
pub(crate) struct Header<'a> {
    pub name: &'a [u8],
    pub link: &'a [u8],
    pub kind: Kind,
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

/// Go's `formatOctal`: the digits zero-padded to the field's width less one, then a NUL.
/// Written in place (formatting and padding strings per field made a few allocations per
/// header field, a visible share of a large export's user time).
fn format_octal(b: &mut [u8], x: i64) {
    // What does not fit is written as 0; what fits has at most `len - 1` digits (for the
    // widths of 22 and more that accept any value, an i64's 21 digits).
    let mut x = if fits_octal(b.len(), x) { x as u64 } else { 0 };
    let (digits, nul) = b.split_at_mut(b.len() - 1);
    nul[0] = 0;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (x & 7) as u8;
        x >>= 3;
    }
}

/// The ASCII bytes of `parts` (Go's `toASCII`), cut after [`FIELD_PEEK`] bytes: every caller
/// writes the result into a field of at most 100 bytes, and [`format_string`] only needs to
/// see that the string was longer than the field. Filtering a whole very deep path for each
/// entry made it the export's hottest loop.
fn ascii_prefix<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    parts.into_iter().flatten().copied().filter(|&c| c < 0x80 && c != 0).take(FIELD_PEEK).collect()
}

/// One byte more than the widest name field, so a cut name still reads as too long.
const FIELD_PEEK: usize = 101;

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
    b[156] = h.kind.flag();
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

/// `path.Join(dir, "PaxHeaders.0", file)` for the clean relative names Diff produces, as
/// the pieces to join (no copy of a long name).
fn pax_name(name: &[u8]) -> [&[u8]; 5] {
    let (dir, file) = match name.iter().rposition(|&b| b == b'/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (&b""[..], name),
    };
    let sep = |part: &[u8]| -> &'static [u8] {
        if part.is_empty() {
            b""
        } else {
            b"/"
        }
    };
    [dir, sep(dir), b"PaxHeaders.0", sep(file), file]
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
            let mut xname = ascii_prefix(pax_name(h.name));
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
            let mut b = template(h, &ascii_prefix([h.name]), &ascii_prefix([h.link]));
            set_format(&mut b);
            self.w.write_all(&b)?;
        }
        let size = if h.kind == Kind::Reg { h.size.max(0) as u64 } else { 0 };
        self.remaining = size;
        self.pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        if size == 0 {
            self.pad = 0;
        }
        Ok(())
    }

    /// Writes entry data; the last call completes the entry's padding.
    #[cfg(test)]
    pub fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.len() as u64 > self.remaining {
            return Err(io::Error::other("tar entry data is longer than its header says"));
        }
        self.w.write_all(buf)?;
        self.data_written(buf.len() as u64)
    }

    /// Accounts for `n` bytes of entry data the caller put into the sink itself (reading
    /// a file straight into the output); the last call completes the entry's padding.
    pub fn data_written(&mut self, n: u64) -> io::Result<()> {
        if n > self.remaining {
            return Err(io::Error::other("tar entry data is longer than its header says"));
        }
        self.remaining -= n;
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

/// Go's `maxSpecialFileSize`: the most a PAX header (all its records together), a GNU long
/// name or a GNU long link may hold. Go refuses larger ones (`header field too long`).
pub(crate) const MAX_SPECIAL: u64 = 1 << 20;

/// One entry as Go's `tar.Reader.Next` returns it, after PAX records and GNU long names were
/// merged into it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub name: Vec<u8>,
    pub link: Vec<u8>,
    pub flag: u8,
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    /// The size the header (or a PAX `size` record) gives.
    pub size: i64,
    pub mtime: i64,
    pub devmajor: i64,
    pub devminor: i64,
    /// The entry's PAX records, one per key (the last one wins, as in Go's map), by key.
    pub pax: Pax,
    /// Where the entry's data starts in the stream.
    pub data_pos: u64,
    /// Bytes of data that follow the header (0 for header-only types, as in Go).
    pub data_len: u64,
}

/// PAX records kept as ranges of the one buffer they were read into: millions of tiny
/// records cost a few bytes each, not an allocation each.
#[derive(Debug, Default)]
pub(crate) struct Pax {
    buf: Vec<u8>,
    recs: Vec<[u32; 3]>,
}

impl Pax {
    /// The records as (key, value).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.recs
            .iter()
            .map(|&[k, eq, end]| (&self.buf[k as usize..eq as usize], &self.buf[eq as usize + 1..end as usize]))
    }

    /// Parses a PAX header's data as Go's `parsePAX` does; `None` where Go says `ErrHeader`.
    fn parse(buf: Vec<u8>) -> Option<Pax> {
        let mut recs: Vec<[u32; 3]> = Vec::new();
        let mut at = 0usize;
        while at < buf.len() {
            let s = &buf[at..];
            let sp = s.iter().position(|&b| b == b' ')?;
            let n: i64 = go_parse_int(&s[..sp])?;
            if n < 5 || n > s.len() as i64 {
                return None;
            }
            let n = n as usize;
            if n <= sp + 1 || s[n - 1] != b'\n' {
                return None;
            }
            let rec = &s[sp + 1..n - 1];
            let eq = rec.iter().position(|&b| b == b'=')?;
            let (k, v) = (&rec[..eq], &rec[eq + 1..]);
            let valid = match k {
                b"" => false,
                b"path" | b"linkpath" | b"uname" | b"gname" => !v.contains(&0),
                _ => !k.contains(&0),
            };
            if !valid {
                return None;
            }
            let k0 = at + sp + 1;
            recs.push([k0 as u32, (k0 + eq) as u32, (at + n - 1) as u32]);
            at += n;
        }
        // Go keeps the last record of a key: a stable sort by key, then the last of each run.
        let key = |r: &[u32; 3]| &buf[r[0] as usize..r[1] as usize];
        recs.sort_by(|a, b| key(a).cmp(key(b)));
        let mut out: Vec<[u32; 3]> = Vec::with_capacity(recs.len());
        for r in recs {
            match out.last_mut() {
                Some(last) if key(last) == key(&r) => *last = r,
                _ => out.push(r),
            }
        }
        Some(Pax { buf, recs: out })
    }
}

/// Go's `strconv.ParseInt(s, 10, 64)`.
fn go_parse_int(s: &[u8]) -> Option<i64> {
    let t = std::str::from_utf8(s).ok()?;
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// Go's `parser.parseString`: up to the first NUL.
fn go_string(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

/// Go's `parser.parseOctal`; `None` where Go sets `ErrHeader`.
fn go_octal(b: &[u8]) -> Option<i64> {
    let start = b.iter().position(|&c| c != b' ' && c != 0).unwrap_or(b.len());
    let end = b.iter().rposition(|&c| c != b' ' && c != 0).map_or(start, |i| i + 1);
    if start >= end {
        return Some(0);
    }
    let t = go_string(&b[start..end]);
    if t.is_empty() || !t.iter().all(|c| (b'0'..=b'7').contains(c)) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(t).ok()?, 8).ok().map(|x| x as i64)
}

/// Go's `parser.parseNumeric`: base-256 when the top bit is set, else octal.
fn go_numeric(b: &[u8]) -> Option<i64> {
    if b.first().is_some_and(|&c| c & 0x80 != 0) {
        let inv = if b[0] & 0x40 != 0 { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, &c) in b.iter().enumerate() {
            let mut c = c ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 > 0 {
                return None;
            }
            x = x << 8 | c as u64;
        }
        if x >> 63 > 0 {
            return None;
        }
        return Some(if inv == 0xff { !(x as i64) } else { x as i64 });
    }
    go_octal(b)
}

/// The header formats Go's `getFormat` tells apart.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    V7,
    Ustar,
    Star,
    Gnu,
}

fn header_format(b: &[u8; BLOCK]) -> Option<Format> {
    let value = go_octal(&b[148..156])?;
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &c) in b.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += c as i64;
        signed += c as i8 as i64;
    }
    if value != unsigned && value != signed {
        return None;
    }
    Some(match (&b[257..263], &b[263..265], &b[508..512]) {
        (b"ustar\0", _, b"tar\0") => Format::Star,
        (b"ustar\0", _, _) => Format::Ustar,
        (b"ustar ", b" \0", _) => Format::Gnu,
        _ => Format::V7,
    })
}

/// Go's `isHeaderOnlyType`: these entries have no data, whatever their size field says.
fn header_only(flag: u8) -> bool {
    Kind::from_flag(flag).is_some_and(|k| k != Kind::Reg)
}

fn bad_header(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("invalid tar header ({why})"))
}

/// Reads a tar stream as Go's `tar.Reader` does (see the module docs).
pub(crate) struct Reader<R: Read> {
    r: R,
    /// Bytes consumed from `r`.
    pos: u64,
    /// Data of the current entry not yet read, then its padding.
    remaining: u64,
    pad: u64,
    /// Set once the end of the archive was reached (cleanly or not).
    done: bool,
}

impl<R: Read> Reader<R> {
    pub fn new(r: R) -> Self {
        Reader { r, pos: 0, remaining: 0, pad: 0, done: false }
    }

    /// The underlying reader, positioned after what the tar reader consumed.
    pub fn into_inner(self) -> R {
        self.r
    }

    /// Reads until `buf` is full or the stream ends; returns how much was read.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += n as u64;
        Ok(n)
    }

    fn skip(&mut self, mut n: u64) -> io::Result<u64> {
        let mut buf = [0u8; 8192];
        let mut done = 0;
        while n > 0 {
            let k = self.fill(&mut buf[..n.min(8192) as usize])?;
            if k == 0 {
                break;
            }
            done += k as u64;
            n -= k as u64;
        }
        Ok(done)
    }

    /// One header block; `None` at the end of the archive (`io.EOF` in Go).
    fn read_block(&mut self) -> io::Result<Option<[u8; BLOCK]>> {
        let mut b = [0u8; BLOCK];
        match self.fill(&mut b)? {
            0 => return Ok(None),
            BLOCK => {}
            _ => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the stream ends inside a tar header")),
        }
        if b.iter().all(|&c| c == 0) {
            // Go: two zero blocks end the archive, one followed by the end of the stream
            // too; one followed by anything else is an invalid header, not an end.
            let mut b2 = [0u8; BLOCK];
            match self.fill(&mut b2)? {
                0 => return Ok(None),
                BLOCK => {}
                _ => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the stream ends inside a tar header")),
            }
            if b2.iter().all(|&c| c == 0) {
                return Ok(None);
            }
            return Err(bad_header("a single zero block followed by more data"));
        }
        Ok(Some(b))
    }

    /// The data of an extension header, refused unread when it is over [`MAX_SPECIAL`].
    fn special(&mut self, what: &str, hdr_name: &[u8], size: u64) -> io::Result<Vec<u8>> {
        if size > MAX_SPECIAL {
            let named = if hdr_name.is_empty() {
                String::new()
            } else {
                format!(" (header {:?})", String::from_utf8_lossy(&hdr_name[..hdr_name.len().min(100)]))
            };
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "header field too long: {what}{named} is {size} bytes; the limit is {MAX_SPECIAL} bytes (1 MiB), \
                     as in Go's archive/tar"
                ),
            ));
        }
        let mut v = vec![0u8; size as usize];
        if self.fill(&mut v)? < v.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("the stream ends inside a {what}")));
        }
        self.remaining = 0;
        Ok(v)
    }

    /// The next entry, or `None` at the end of the archive.
    pub fn next(&mut self) -> io::Result<Option<Entry>> {
        if self.done {
            return Ok(None);
        }
        let r = self.next_inner();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r
    }

    fn next_inner(&mut self) -> io::Result<Option<Entry>> {
        let mut pax: Option<Pax> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            // Discard the rest of the current entry and its padding.
            let left = self.remaining;
            if self.skip(left)? < left {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the stream ends inside an entry's data"));
            }
            let pad = self.pad;
            self.remaining = 0;
            self.pad = 0;
            if self.skip(pad)? < pad {
                // Go's reader takes this as the end; apply then finds no end-of-archive block.
                return Ok(None);
            }
            let Some(b) = self.read_block()? else { return Ok(None) };
            let format = header_format(&b).ok_or_else(|| bad_header("bad checksum or unknown format"))?;
            let num = |r: std::ops::Range<usize>| go_numeric(&b[r]).ok_or_else(|| bad_header("malformed number"));
            let flag = b[156];
            let mut name = go_string(&b[0..100]).to_vec();
            let link = go_string(&b[157..257]).to_vec();
            let size = num(124..136)?;
            let mode = num(100..108)?;
            let uid = num(108..116)?;
            let gid = num(116..124)?;
            let mtime = num(136..148)?;
            let (mut devmajor, mut devminor) = (0, 0);
            if format != Format::V7 {
                devmajor = num(329..337)?;
                devminor = num(337..345)?;
                let prefix: &[u8] = match format {
                    Format::Ustar => go_string(&b[345..500]),
                    Format::Star => {
                        num(476..488)?;
                        num(488..500)?;
                        go_string(&b[345..476])
                    }
                    _ => {
                        // Go reads GNU atime/ctime leniently and, when they do not parse,
                        // takes the field as a pre-Go1.8 USTAR prefix.
                        let ok = (b[345] == 0 || go_numeric(&b[345..357]).is_some())
                            && (b[357] == 0 || go_numeric(&b[357..369]).is_some());
                        let p = go_string(&b[345..500]);
                        if !ok && p.is_ascii() {
                            p
                        } else {
                            b""
                        }
                    }
                };
                if !prefix.is_empty() {
                    let mut n = prefix.to_vec();
                    n.push(b'/');
                    n.extend_from_slice(&name);
                    name = n;
                }
            }
            if size < 0 && !header_only(flag) {
                return Err(bad_header("negative size"));
            }
            let data = if header_only(flag) { 0 } else { size as u64 };
            self.remaining = data;
            self.pad = (BLOCK as u64 - data % BLOCK as u64) % BLOCK as u64;
            match flag {
                b'x' | b'g' => {
                    let what = if flag == b'x' { "a PAX extended header" } else { "a PAX global header" };
                    let buf = self.special(what, &name, data)?;
                    pax = Some(Pax::parse(buf).ok_or_else(|| bad_header("malformed PAX record"))?);
                    if flag == b'x' {
                        continue;
                    }
                }
                b'L' | b'K' => {
                    let what = if flag == b'L' { "a GNU long name" } else { "a GNU long link name" };
                    let buf = self.special(what, &name, data)?;
                    let v = go_string(&buf).to_vec();
                    if flag == b'L' {
                        long_name = Some(v);
                    } else {
                        long_link = Some(v);
                    }
                    continue;
                }
                _ => {}
            }
            let mut e = Entry {
                name,
                link,
                flag,
                mode,
                uid,
                gid,
                size,
                mtime,
                devmajor,
                devminor,
                pax: pax.take().unwrap_or_default(),
                data_pos: self.pos,
                data_len: 0,
            };
            // Go's mergePAX: an empty value keeps the header's.
            for (k, v) in e.pax.iter() {
                if v.is_empty() {
                    continue;
                }
                let int = || go_parse_int(v).ok_or_else(|| bad_header("malformed PAX number"));
                match k {
                    b"path" => e.name = v.to_vec(),
                    b"linkpath" => e.link = v.to_vec(),
                    b"uid" => e.uid = int()?,
                    b"gid" => e.gid = int()?,
                    b"size" => e.size = int()?,
                    _ => {}
                }
            }
            if flag == b'g' {
                // Go returns the global header as an entry of its own, data already read.
                return Ok(Some(e));
            }
            if let Some(n) = long_name.filter(|n| !n.is_empty()) {
                e.name = n;
            }
            if let Some(l) = long_link.filter(|l| !l.is_empty()) {
                e.link = l;
            }
            if e.size < 0 && !header_only(flag) {
                return Err(bad_header("negative size"));
            }
            // A PAX size replaces the header's for the framing too.
            let data = if header_only(flag) { 0 } else { e.size as u64 };
            self.remaining = data;
            self.pad = (BLOCK as u64 - data % BLOCK as u64) % BLOCK as u64;
            e.data_len = data;
            return Ok(Some(e));
        }
    }
}

impl<R: Read> Read for Reader<R> {
    /// Reads the current entry's data; a stream that ends first is an `UnexpectedEof`.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = loop {
            match self.r.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => break r?,
            }
        };
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the stream ends inside an entry's data"));
        }
        self.pos += n as u64;
        self.remaining -= n as u64;
        Ok(n)
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
        assert_eq!(pax_name(b"a/b/").concat(), b"a/b/PaxHeaders.0");
        assert_eq!(pax_name(b"foo").concat(), b"PaxHeaders.0/foo");
        assert_eq!(pax_name(b"a/foo").concat(), b"a/PaxHeaders.0/foo");
        let long = [&[b'a'; 120][..], b"/", &[b'b'; 50]].concat();
        assert_eq!(split_ustar(&long), Some((&long[..120], &long[121..])));
        assert_eq!(split_ustar(b"short"), None);
    }

    /// Octal fields as Go's `formatOctal` writes them (zero-padded to the width less one,
    /// then NUL; 0 for what does not fit), checked against the string-building form the
    /// in-place one replaced.
    #[test]
    fn octal_fields_are_gos() {
        fn by_strings(b: &mut [u8], x: i64) {
            let x = if fits_octal(b.len(), x) { x } else { 0 };
            let s = format!("{x:o}");
            let mut v = vec![b'0'; b.len().saturating_sub(s.len() + 1)];
            v.extend_from_slice(s.as_bytes());
            format_string(b, &v);
        }
        let mut b = [0xffu8; 8];
        format_octal(&mut b, 0o644);
        assert_eq!(&b, b"0000644\0");
        for width in [7, 8, 12, 22, 30] {
            for x in [0, 1, 7, 8, 0o777, 0o7777777, 0o10000000, 1 << 33, (1 << 33) - 1, -1, i64::MAX, i64::MIN] {
                let (mut a, mut e) = (vec![0xaa; width], vec![0xaa; width]);
                format_octal(&mut a, x);
                by_strings(&mut e, x);
                assert_eq!(a, e, "{x} in {width}");
            }
        }
    }

    /// The name fields of a long, non-ASCII name are what Go's `toASCII` of the whole name
    /// gives, though only a field's width of it is filtered now.
    #[test]
    fn long_names_fill_the_fields_as_go_does() {
        let whole = |s: &[u8]| -> Vec<u8> { s.iter().copied().filter(|&c| c < 0x80 && c != 0).collect() };
        for name in [
            [&"d\u{e9}/".repeat(5000).into_bytes()[..], b"file"].concat(),
            [&[b'a'; 99][..], "\u{e9}".as_bytes(), b"/", &[b'b'; 99]].concat(),
            [&[b'a'; 99][..], "\u{e9}".as_bytes(), b"//x/"].concat(),
            "\u{e9}\u{e9}/x".as_bytes().to_vec(),
        ] {
            let h = Header {
                name: &name,
                link: &name,
                kind: Kind::Link,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: 0,
                mtime: Some(0),
                devmajor: 0,
                devminor: 0,
                records: Vec::new(),
            };
            let mut w = Writer::new(Vec::new());
            w.header(&h).unwrap();
            let mut old_x = whole(&pax_name(&name).concat());
            old_x.truncate(100);
            while old_x.last() == Some(&b'/') {
                old_x.pop();
            }
            let mut want = [0u8; BLOCK];
            format_string(&mut want[0..100], &old_x);
            assert_eq!(w.w[0..100], want[0..100]);
            let main = &w.w[w.w.len() - BLOCK..];
            let want = template(&h, &whole(&name), &whole(&name));
            assert_eq!(main[0..100], want[0..100]);
            assert_eq!(main[157..257], want[157..257]);
        }
    }

    #[test]
    fn numbers_and_pax_like_go() {
        assert_eq!(go_octal(b"0000644\0"), Some(0o644));
        assert_eq!(go_octal(b"  644 \0"), Some(0o644));
        assert_eq!(go_octal(b"\0\0\0"), Some(0));
        assert_eq!(go_octal(b"64 4"), None);
        assert_eq!(go_octal(b"9"), None);
        assert_eq!(go_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(go_numeric(&[0xff; 8]), Some(-1));
        let mut data = pax_record(b"path", b"a");
        data.extend(pax_record(b"SCHILY.xattr.user.k", b"1"));
        data.extend(pax_record(b"path", b"b"));
        let pax = Pax::parse(data).unwrap();
        let recs: Vec<_> = pax.iter().collect();
        assert_eq!(recs, [(&b"SCHILY.xattr.user.k"[..], &b"1"[..]), (b"path", b"b")]);
        assert!(Pax::parse(b"9 path=a".to_vec()).is_none());
        assert!(Pax::parse(b"11 path=a\0b\n".to_vec()).is_none());
    }

    #[test]
    fn one_zero_block_is_an_end_only_at_the_end() {
        let mut w = Writer::new(Vec::new());
        let h = Header {
            name: b"a",
            link: b"",
            kind: Kind::Reg,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 1,
            mtime: Some(0),
            devmajor: 0,
            devminor: 0,
            records: Vec::new(),
        };
        w.header(&h).unwrap();
        w.data(b"x").unwrap();
        let one = [w.w.clone(), vec![0u8; 512]].concat();
        let mut r = Reader::new(&one[..]);
        assert_eq!(r.next().unwrap().unwrap().name, b"a");
        assert!(r.next().unwrap().is_none());
        let more = [one.clone(), one[..1024].to_vec()].concat();
        let mut r = Reader::new(&more[..]);
        r.next().unwrap().unwrap();
        assert!(r.next().unwrap_err().to_string().contains("invalid tar header"));
    }
}
