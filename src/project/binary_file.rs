//! Binary state files: what wanx keeps under `.wanx/` to avoid parsing text it has parsed before (the
//! plan cache, the lock's mirror). A file is an 8-byte magic (its kind and format version), the
//! 32-byte digest of what it is valid for, a payload, and the blake3 of everything before it. A file
//! that is missing, truncated, corrupted, of another format or for another digest reads as nothing:
//! such a file can cost a miss, never a wrong value. Files are written atomically (a temporary file
//! renamed over the old one), and a write that fails is ignored, since the file is only a cache.
//!
//! [`Writer`] and [`Reader`] are the payload's encoding: little-endian integers, length-prefixed
//! strings and lists, a tag byte before each option.

use std::ops::Range;
use std::path::Path;

/// The payload of the file at `path`, when it is whole, of kind `magic` and valid for `valid_for`.
pub fn read(path: &Path, magic: &[u8; 8], valid_for: &[u8; 32]) -> Option<Vec<u8>> {
    let mut bytes = std::fs::read(path).ok()?;
    let body = bytes.len().checked_sub(32)?;
    if body < 40
        || blake3::hash(&bytes[..body]).as_bytes() != &bytes[body..]
        || bytes[..8] != magic[..]
        || bytes[8..40] != valid_for[..]
    {
        return None;
    }
    bytes.truncate(body);
    bytes.drain(..40);
    Some(bytes)
}

/// Writes `payload` at `path` as a file of kind `magic` valid for `valid_for`. Best effort.
pub fn write(path: &Path, magic: &[u8; 8], valid_for: &[u8; 32], payload: &[u8]) {
    let mut bytes = Vec::with_capacity(payload.len() + 72);
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(valid_for);
    bytes.extend_from_slice(payload);
    let sum = *blake3::hash(&bytes).as_bytes();
    bytes.extend_from_slice(&sum);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    if std::fs::write(&tmp, &bytes).is_err() || std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// A payload being encoded.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    pub fn count(&mut self, n: usize) {
        self.u64(n as u64);
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.count(b.len());
        self.0.extend_from_slice(b);
    }
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    /// A tag (0 for `None`, 1 for `Some`) and, when present, the value written by `f`.
    pub fn opt<T>(&mut self, v: Option<&T>, f: impl FnOnce(&mut Self, &T)) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                f(self, v);
            }
        }
    }
    pub fn opt_str(&mut self, v: Option<&String>) {
        self.opt(v, |w, s| w.str(s));
    }
    pub fn strs(&mut self, v: &[String]) {
        self.count(v.len());
        for s in v {
            self.str(s);
        }
    }
}

/// A payload being decoded; every method is `None` at anything malformed.
pub struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    pub fn new(bytes: &'b [u8]) -> Reader<'b> {
        Reader { bytes, at: 0 }
    }
    /// Whether every byte was read.
    pub fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
    pub fn take(&mut self, n: usize) -> Option<&'b [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub fn usize(&mut self) -> Option<usize> {
        usize::try_from(self.u64()?).ok()
    }
    pub fn f64(&mut self) -> Option<f64> {
        Some(f64::from_bits(self.u64()?))
    }
    pub fn bool(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    pub fn digest(&mut self) -> Option<[u8; 32]> {
        self.take(32)?.try_into().ok()
    }
    /// A length-prefixed byte string, as its range in the payload.
    pub fn span(&mut self) -> Option<Range<usize>> {
        let len = self.usize()?;
        let start = self.at;
        self.take(len)?;
        Some(start..start + len)
    }
    /// A length-prefixed byte string, borrowed from the payload.
    pub fn take_bytes(&mut self) -> Option<&'b [u8]> {
        let len = self.usize()?;
        self.take(len)
    }
    pub fn str(&mut self) -> Option<String> {
        let len = self.usize()?;
        Some(std::str::from_utf8(self.take(len)?).ok()?.to_owned())
    }
    #[allow(
        clippy::option_option,
        reason = "`None`: the bytes are malformed; `Some(None)`: the value is absent"
    )]
    pub fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(f(self)?)),
            _ => None,
        }
    }
    #[allow(
        clippy::option_option,
        reason = "`None`: the bytes are malformed; `Some(None)`: the value is absent"
    )]
    pub fn opt_str(&mut self) -> Option<Option<String>> {
        self.opt(Reader::str)
    }
    pub fn strs(&mut self) -> Option<Vec<String>> {
        self.list(Reader::str)
    }
    /// A length and that many values read by `f`.
    pub fn list<T>(&mut self, mut f: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let len = self.usize()?;
        // Every value takes at least one byte: a corrupt length cannot reserve much.
        let mut out = Vec::with_capacity(len.min(self.bytes.len() - self.at));
        for _ in 0..len {
            out.push(f(self)?);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_reads_back_only_whole_and_for_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.cache");
        let mut w = Writer::default();
        w.str("héllo");
        w.opt(Some(&7u32), |w, v| w.u32(*v));
        w.f64(0.1);
        write(&path, b"TESTFMT1", &[1; 32], &w.0);
        let payload = read(&path, b"TESTFMT1", &[1; 32]).unwrap();
        let mut r = Reader::new(&payload);
        assert_eq!(r.str().as_deref(), Some("héllo"));
        assert_eq!(r.opt(Reader::u32), Some(Some(7)));
        assert_eq!(r.f64(), Some(0.1));
        assert!(r.done());
        // Another digest, another kind: nothing.
        assert!(read(&path, b"TESTFMT1", &[2; 32]).is_none());
        assert!(read(&path, b"TESTFMT2", &[1; 32]).is_none());
        // Any byte flipped, or the file cut short: nothing.
        let bytes = std::fs::read(&path).unwrap();
        for i in [0, 8, 40, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            assert!(read(&path, b"TESTFMT1", &[1; 32]).is_none(), "byte {i}");
        }
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        assert!(read(&path, b"TESTFMT1", &[1; 32]).is_none());
    }

    #[test]
    fn malformed_payloads_read_as_none() {
        let mut w = Writer::default();
        w.u64(u64::MAX); // a length far beyond the payload
        let mut r = Reader::new(&w.0);
        assert!(r.str().is_none());
        let mut r = Reader::new(&w.0);
        assert!(r.list(Reader::u8).is_none());
        let mut r = Reader::new(&[2]);
        assert!(r.opt(Reader::u8).is_none(), "a tag other than 0 or 1");
    }
}
