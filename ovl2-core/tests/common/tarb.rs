//! A raw tar writer for tests: any name, any type, any PAX record, so hostile archives can
//! be built exactly (the tar crate's Builder refuses the interesting ones).
#![allow(dead_code, missing_docs)]

use std::io::Write;

pub struct Tar {
    pub buf: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct E {
    pub name: Vec<u8>,
    pub ty: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub link: Vec<u8>,
    pub data: Vec<u8>,
    pub dev: (u32, u32),
    pub pax: Vec<(String, Vec<u8>)>,
    /// Size to write in the header when it should lie about the data.
    pub size_override: Option<u64>,
}

impl E {
    pub fn new(name: &str, ty: u8) -> E {
        E {
            name: name.as_bytes().to_vec(),
            ty,
            mode: if ty == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            link: Vec::new(),
            data: Vec::new(),
            dev: (0, 0),
            pax: Vec::new(),
            size_override: None,
        }
    }
    pub fn file(name: &str, data: &[u8]) -> E {
        E { data: data.to_vec(), ..E::new(name, b'0') }
    }
    pub fn dir(name: &str) -> E {
        E::new(name, b'5')
    }
    pub fn symlink(name: &str, target: &str) -> E {
        E { link: target.as_bytes().to_vec(), mode: 0o777, ..E::new(name, b'2') }
    }
    pub fn hardlink(name: &str, target: &str) -> E {
        E { link: target.as_bytes().to_vec(), ..E::new(name, b'1') }
    }
    pub fn mode(mut self, m: u32) -> E {
        self.mode = m;
        self
    }
    pub fn owner(mut self, u: u32, g: u32) -> E {
        self.uid = u;
        self.gid = g;
        self
    }
    pub fn mtime(mut self, t: u64) -> E {
        self.mtime = t;
        self
    }
    pub fn pax(mut self, k: &str, v: &[u8]) -> E {
        self.pax.push((k.to_owned(), v.to_vec()));
        self
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
}

fn record(k: &str, v: &[u8]) -> Vec<u8> {
    let base = k.len() + v.len() + 3;
    let mut n = base + base.to_string().len();
    if (base + n.to_string().len()) != n {
        n = base + n.to_string().len();
    }
    let mut r = format!("{n} {k}=").into_bytes();
    r.extend_from_slice(v);
    r.push(b'\n');
    assert_eq!(r.len(), n);
    r
}

#[allow(clippy::too_many_arguments)]
fn header(
    name: &[u8],
    ty: u8,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: u64,
    link: &[u8],
    dev: (u32, u32),
) -> [u8; 512] {
    let mut b = [0u8; 512];
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name[..n]);
    octal(&mut b[100..108], mode as u64);
    octal(&mut b[108..116], uid as u64);
    octal(&mut b[116..124], gid as u64);
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], mtime);
    b[156] = ty;
    let l = link.len().min(100);
    b[157..157 + l].copy_from_slice(&link[..l]);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    octal(&mut b[329..337], dev.0 as u64);
    octal(&mut b[337..345], dev.1 as u64);
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&c| c as u32).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
    b
}

impl Tar {
    pub fn new() -> Tar {
        Tar { buf: Vec::new() }
    }
    fn pad(&mut self) {
        let r = self.buf.len() % 512;
        if r != 0 {
            self.buf.extend(std::iter::repeat_n(0u8, 512 - r));
        }
    }
    pub fn add(&mut self, e: &E) -> &mut Tar {
        let mut pax = e.pax.clone();
        if e.name.len() > 100 {
            pax.push(("path".into(), e.name.clone()));
        }
        if e.link.len() > 100 {
            pax.push(("linkpath".into(), e.link.clone()));
        }
        if !pax.is_empty() {
            let data: Vec<u8> = pax.iter().flat_map(|(k, v)| record(k, v)).collect();
            let h = header(b"PaxHeaders/x", b'x', 0, 0, 0, data.len() as u64, 0, b"", (0, 0));
            self.buf.extend_from_slice(&h);
            self.buf.extend_from_slice(&data);
            self.pad();
        }
        let size = e.size_override.unwrap_or(e.data.len() as u64);
        let h = header(&e.name, e.ty, e.mode, e.uid, e.gid, size, e.mtime, &e.link, e.dev);
        self.buf.extend_from_slice(&h);
        self.buf.extend_from_slice(&e.data);
        self.pad();
        self
    }
    pub fn finish(&mut self) -> Vec<u8> {
        let mut b = self.buf.clone();
        b.extend_from_slice(&[0u8; 1024]);
        b
    }
}

/// A bare header block (ustar, mode 0644, owner 0:0) of type `ty` claiming `size` bytes.
pub fn raw_header(name: &[u8], ty: u8, size: u64) -> [u8; 512] {
    header(name, ty, 0o644, 0, 0, size, 0, b"", (0, 0))
}

/// Writes an extension header (`L`, `K`, `x`, `g`) whose `size` bytes of data repeat `unit`,
/// streamed so a huge one never sits in memory.
pub fn write_special<W: Write>(w: &mut W, name: &[u8], ty: u8, size: u64, unit: &[u8]) {
    w.write_all(&raw_header(name, ty, size)).unwrap();
    let chunk: Vec<u8> = unit.iter().copied().cycle().take(unit.len() * (1usize << 16).div_ceil(unit.len())).collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        w.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    let pad = (512 - size % 512) % 512;
    w.write_all(&vec![0u8; pad as usize]).unwrap();
}

/// Like [`write_special`] followed by `then`, compressed by `z` as a series of members or
/// frames (gzip and zstd readers take their concatenation as one stream): the 1 MiB body
/// chunk is compressed once and repeated, so a gigabyte header costs milliseconds to build.
pub fn special_compressed(
    z: fn(&[u8]) -> Vec<u8>,
    name: &[u8],
    ty: u8,
    size: u64,
    unit: &[u8],
    then: &[u8],
) -> Vec<u8> {
    let chunk: Vec<u8> = unit.iter().copied().cycle().take(unit.len() * (1usize << 20).div_ceil(unit.len())).collect();
    let packed = z(&chunk);
    let mut out = z(&raw_header(name, ty, size));
    let mut left = size;
    while left >= chunk.len() as u64 {
        out.extend_from_slice(&packed);
        left -= chunk.len() as u64;
    }
    let mut tail = chunk[..left as usize].to_vec();
    tail.extend(std::iter::repeat_n(0u8, ((512 - size % 512) % 512) as usize));
    tail.extend_from_slice(then);
    out.extend_from_slice(&z(&tail));
    out
}

/// A PAX record (`"<len> key=value\n"`).
pub fn pax_record(k: &str, v: &[u8]) -> Vec<u8> {
    record(k, v)
}

pub fn tar(entries: &[E]) -> Vec<u8> {
    let mut t = Tar::new();
    for e in entries {
        t.add(e);
    }
    t.finish()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}
