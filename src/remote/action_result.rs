//! `RemoteEntry`: what the remote cache's action cache (`/ac/`) holds for one wanx key, encoded as a
//! REAPI `build.bazel.remote.execution.v2.ActionResult` protobuf, so servers that parse or validate
//! action-cache entries (bazel-remote, Buildbarn) accept it.
//!
//! The images are the result's `output_files` in index order (`image-1`, `image-2`, …), each with its
//! `Digest` (SHA-256 hex and size): the blobs a server stores under `/cas/`. What wanx needs besides
//! (the blake3 of each image, the model, when it was generated) travels as a small JSON document in
//! `stdout_raw`, a free-form bytes field. Only the four messages' few fields used here are encoded,
//! by hand: the protobuf wire format for strings, bytes and varints is a dozen lines, and a code
//! generator would cost more build time than the whole module.
//!
//! Field numbers, from `remote_execution.proto`: `ActionResult.output_files = 2`,
//! `ActionResult.stdout_raw = 5`; `OutputFile.path = 1`, `OutputFile.digest = 2`; `Digest.hash = 1`,
//! `Digest.size_bytes = 2`. Unknown fields are skipped when decoding, as protobuf requires.

use serde::{Deserialize, Serialize};

/// One image of a remote entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteImage {
    /// SHA-256 of the bytes, lowercase hex: the blob's name under `/cas/`.
    #[serde(skip)]
    pub sha256: String,
    pub size: u64,
    /// blake3 of the bytes, lowercase hex: the blob's name in `.wanx/blobs`.
    pub blake3: String,
}

/// A key's entry: its images in index order, and what restoring them needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEntry {
    pub model: String,
    /// Unix seconds (for `{timestamp}` file names).
    pub generated_at: i64,
    pub images: Vec<RemoteImage>,
}

/// The JSON in `stdout_raw`.
#[derive(Serialize, Deserialize)]
struct Meta {
    wanx: u32,
    model: String,
    generated_at: i64,
    images: Vec<RemoteImage>,
}

const META_VERSION: u32 = 1;

impl RemoteEntry {
    /// The `ActionResult` protobuf bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, image) in self.images.iter().enumerate() {
            let mut digest = Vec::new();
            put_bytes(&mut digest, 1, image.sha256.as_bytes());
            put_varint_field(&mut digest, 2, image.size);
            let mut file = Vec::new();
            put_bytes(&mut file, 1, format!("image-{}", i + 1).as_bytes());
            put_bytes(&mut file, 2, &digest);
            put_bytes(&mut out, 2, &file);
        }
        let meta = Meta {
            wanx: META_VERSION,
            model: self.model.clone(),
            generated_at: self.generated_at,
            images: self.images.clone(),
        };
        let json = serde_json::to_vec(&meta).expect("the metadata always serializes");
        put_bytes(&mut out, 5, &json);
        out
    }

    /// Parses and checks an `ActionResult` from the remote: every digest and blake3 well formed,
    /// as many output files as the metadata lists images, in order.
    pub fn decode(bytes: &[u8]) -> Result<RemoteEntry, String> {
        let mut files: Vec<(String, String, u64)> = Vec::new();
        let mut meta: Option<Meta> = None;
        for field in Fields(bytes) {
            match field? {
                (2, Value::Bytes(file)) => files.push(decode_file(file)?),
                (5, Value::Bytes(json)) => {
                    meta = Some(
                        serde_json::from_slice(json)
                            .map_err(|e| format!("unreadable wanx metadata: {e}"))?,
                    );
                }
                _ => {}
            }
        }
        let meta = meta.ok_or("no wanx metadata (not written by wanx)")?;
        if meta.wanx != META_VERSION {
            return Err(format!(
                "metadata version {} is not {META_VERSION}",
                meta.wanx
            ));
        }
        if files.is_empty() || files.len() != meta.images.len() {
            return Err(format!(
                "{} output files for {} images",
                files.len(),
                meta.images.len()
            ));
        }
        let mut images = Vec::with_capacity(files.len());
        for (i, ((path, sha256, size), image)) in files.into_iter().zip(meta.images).enumerate() {
            if path != format!("image-{}", i + 1) {
                return Err(format!("output file {} is named `{path}`", i + 1));
            }
            if !is_hex64(&sha256) || !is_hex64(&image.blake3) {
                return Err(format!("image {} has a malformed digest", i + 1));
            }
            if size != image.size {
                return Err(format!("image {} has two sizes", i + 1));
            }
            images.push(RemoteImage {
                sha256,
                size,
                blake3: image.blake3,
            });
        }
        Ok(RemoteEntry {
            model: meta.model,
            generated_at: meta.generated_at,
            images,
        })
    }
}

/// `OutputFile` → (path, sha256, size).
fn decode_file(bytes: &[u8]) -> Result<(String, String, u64), String> {
    let (mut path, mut digest) = (None, None);
    for field in Fields(bytes) {
        match field? {
            (1, Value::Bytes(p)) => path = Some(utf8(p)?),
            (2, Value::Bytes(d)) => {
                let (mut hash, mut size) = (None, 0);
                for f in Fields(d) {
                    match f? {
                        (1, Value::Bytes(h)) => hash = Some(utf8(h)?),
                        (2, Value::Varint(s)) => size = s,
                        _ => {}
                    }
                }
                digest = Some((hash.ok_or("a digest without a hash")?, size));
            }
            _ => {}
        }
    }
    let (hash, size) = digest.ok_or("an output file without a digest")?;
    Ok((path.ok_or("an output file without a path")?, hash, size))
}

fn utf8(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "a string that is not UTF-8".to_owned())
}

pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    put_varint(out, field << 3);
    put_varint(out, v);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed32 or fixed64 field: skipped.
    Fixed,
}

/// The fields of one message, in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or("a truncated varint")?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("a varint longer than 10 bytes".to_owned())
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| "a field too long")?;
        if n > self.0.len() {
            return Err("a truncated field".to_owned());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn field(&mut self) -> Result<(u64, Value<'a>), String> {
        let tag = self.varint()?;
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => self.take(8).map(|_| Value::Fixed)?,
            2 => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?)
            }
            5 => self.take(4).map(|_| Value::Fixed)?,
            other => return Err(format!("unsupported wire type {other}")),
        };
        Ok((tag >> 3, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let item = self.field();
        if item.is_err() {
            self.0 = &[];
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> RemoteEntry {
        RemoteEntry {
            model: "wan2.2-t2i-flash".into(),
            generated_at: 1_700_000_000,
            images: vec![
                RemoteImage {
                    sha256: "a".repeat(64),
                    size: 300,
                    blake3: "b".repeat(64),
                },
                RemoteImage {
                    sha256: "c".repeat(64),
                    size: 5,
                    blake3: "d".repeat(64),
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let e = entry();
        assert_eq!(RemoteEntry::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn encodes_the_reapi_field_numbers() {
        let bytes = entry().encode();
        // output_files (2, length-delimited) first: tag 0x12, then OutputFile's path (1) `image-1`.
        assert_eq!(bytes[0], 0x12);
        let file_len = bytes[1] as usize;
        assert_eq!(&bytes[2..4], &[0x0a, 7]);
        assert_eq!(&bytes[4..11], b"image-1");
        // its digest (2): hash (1) of 64 bytes, then size_bytes (2) 300 as a varint.
        assert_eq!(&bytes[11..15], &[0x12, 69, 0x0a, 64]);
        assert_eq!(&bytes[79..82], &[0x10, 0xac, 0x02]);
        assert_eq!(2 + file_len, 82);
        // The second file takes 81 bytes (a 5 fits one varint byte); stdout_raw (5) comes last.
        assert_eq!(bytes[82 + 81], 0x2a);
    }

    #[test]
    fn skips_unknown_fields() {
        let mut bytes = entry().encode();
        // exit_code (4) = 0 and an unknown fixed64 (15) appended: still the same entry.
        bytes.extend([0x20, 0x00, (15 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(RemoteEntry::decode(&bytes).unwrap(), entry());
    }

    #[test]
    fn rejects_junk_truncation_and_lies() {
        let bytes = entry().encode();
        assert!(RemoteEntry::decode(b"<html>not found</html>").is_err());
        assert!(RemoteEntry::decode(&[]).is_err());
        for cut in [1, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(RemoteEntry::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = entry();
        bad.images[1].sha256 = "zz".into();
        assert!(RemoteEntry::decode(&bad.encode()).is_err());
    }
}
