//! Reading a layer stream: compression detected from magic bytes, every uncompressed byte
//! hashed (the layer's DiffID), and read errors of the source told apart from bad data.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// How a layer stream is compressed. Serialized as [`Compression::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip, possibly several members (pigz).
    Gzip,
    /// zstd (zstd:chunked streams are plain zstd frames plus skippable frames).
    Zstd,
}

impl Compression {
    /// The stable lowercase name ("none", "gzip", "zstd") every face uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Compression {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

const IO_BUF: usize = 256 * 1024;

/// Detects the compression from the first bytes, as Docker's `DetectCompression` does.
/// bzip2 and xz are recognised and refused by name rather than parsed as a tar.
pub fn detect(head: &[u8]) -> Result<Compression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Compression::Zstd)
    } else if head.starts_with(b"BZh") {
        Err(Error::Unsupported("bzip2-compressed layers are not supported; decompress first".into()))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Err(Error::Unsupported("xz-compressed layers are not supported; decompress first".into()))
    } else {
        Ok(Compression::None)
    }
}

/// Shared counters a progress display can read while the stream is consumed.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Bytes read from the caller's reader (compressed).
    pub input: AtomicU64,
    /// Set when the caller's reader itself failed (an I/O error, not bad data).
    pub source_failed: AtomicBool,
}

/// The caller's reader, counting bytes and flagging its own failures.
struct Source<R> {
    inner: R,
    c: Arc<Counters>,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.c.input.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.c.source_failed.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

/// The uncompressed tar stream, hashed as it is read.
pub(crate) struct TarStream<'a> {
    inner: Box<dyn Read + 'a>,
    hasher: Sha256,
    /// Uncompressed bytes read so far.
    pub pos: u64,
}

impl Read for TarStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl TarStream<'_> {
    /// `sha256:<hex>` of everything read.
    pub fn digest(self) -> String {
        hex_digest(self.hasher.finalize())
    }
}

/// Formats a sha256 as Docker's digest string, with the digest crate's own lower-hex form.
pub(crate) fn hex_digest(d: impl Into<sha2::digest::Output<sha2::Sha256>>) -> String {
    format!("sha256:{:x}", d.into())
}

/// Opens `reader` as an uncompressed tar stream.
pub(crate) fn open<'a, R: Read + 'a>(reader: R, c: Arc<Counters>) -> Result<(TarStream<'a>, Compression)> {
    let mut buf = BufReader::with_capacity(IO_BUF, Source { inner: reader, c: c.clone() });
    let head = loop {
        match buf.fill_buf() {
            Ok(h) => break h,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("reading the layer stream", e)),
        }
    };
    let comp = detect(head)?;
    let inner: Box<dyn Read + 'a> = match comp {
        Compression::None => Box::new(buf),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
        Compression::Zstd => {
            let d =
                zstd::stream::read::Decoder::with_buffer(buf).map_err(|e| Error::io("starting the zstd decoder", e))?;
            Box::new(d)
        }
    };
    Ok((TarStream { inner, hasher: Sha256::new(), pos: 0 }, comp))
}

/// Maps a read error of the stream: the caller's reader failing is an I/O error; anything
/// else (bad compression, truncation, a malformed header) is a corrupt archive, located at
/// `at`.
pub(crate) fn stream_error(c: &Counters, at: String, e: io::Error) -> Error {
    if c.source_failed.load(Ordering::Relaxed) {
        return Error::io(format!("reading the layer stream at {at}"), e);
    }
    let reason = match e.kind() {
        io::ErrorKind::UnexpectedEof => format!("stream ends early (truncated): {e}"),
        _ => e.to_string(),
    };
    Error::CorruptArchive { at, reason }
}

/// Size of the chunks handed from the reading thread to the extracting one.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight: bounds memory (about 2 MiB) whatever the layer's size.
const IN_FLIGHT: usize = 8;

type Chunk = io::Result<Vec<u8>>;

/// The extracting side of the pipeline: reads the chunks the calling thread decompressed
/// and hashed.
pub(crate) struct PipeReader {
    rx: std::sync::mpsc::Receiver<Chunk>,
    back: std::sync::mpsc::Sender<Vec<u8>>,
    cur: Vec<u8>,
    off: usize,
    done: bool,
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.off == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    let old = std::mem::replace(&mut self.cur, c);
                    let _ = self.back.send(old);
                    self.off = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.off);
        buf[..n].copy_from_slice(&self.cur[self.off..self.off + n]);
        self.off += n;
        Ok(n)
    }
}

/// The reading side: owned by the calling thread, so the caller's reader needs no `Send`.
pub(crate) struct PipeWriter {
    tx: std::sync::mpsc::SyncSender<Chunk>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
}

/// A bounded pipeline between the thread that reads, decompresses and hashes the stream and
/// the one that parses and writes the layer, so hashing and decompression overlap with the
/// file system work.
pub(crate) fn pipe() -> (PipeWriter, PipeReader) {
    let (tx, rx) = std::sync::mpsc::sync_channel(IN_FLIGHT);
    let (btx, brx) = std::sync::mpsc::channel();
    (PipeWriter { tx, back: brx }, PipeReader { rx, back: btx, cur: Vec::new(), off: 0, done: false })
}

impl PipeWriter {
    /// Copies `src` into the pipe until its end, a read error (passed on to the reader), or
    /// the reader hanging up (it failed; its error is the one to report).
    pub fn pump(self, src: &mut TarStream<'_>) {
        loop {
            let mut buf = self.back.try_recv().unwrap_or_default();
            buf.resize(CHUNK, 0);
            let mut n = 0;
            let err = loop {
                match src.read(&mut buf[n..]) {
                    Ok(0) => break None,
                    Ok(k) => {
                        n += k;
                        if n == buf.len() {
                            break None;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Some(e),
                }
            };
            buf.truncate(n);
            let eof = n < CHUNK;
            if n > 0 && self.tx.send(Ok(buf)).is_err() {
                return;
            }
            if let Some(e) = err {
                let _ = self.tx.send(Err(e));
                return;
            }
            if eof {
                return;
            }
        }
    }
}
