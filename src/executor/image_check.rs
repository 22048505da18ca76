//! Whether a downloaded file is a whole image, not just the start of one. A body cut short with a
//! matching `content-length` (a proxy, a dropped connection the server papered over) still begins
//! with the PNG or JPEG magic, so the magic alone would let it into the cache (DESIGN invariant 6).
//! Each format has an end we can check without decoding: a PNG ends with its `IEND` chunk, a JPEG
//! with the `FFD9` end-of-image marker, and a WebP's RIFF header states its own length.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
/// An empty `IEND` chunk: length 0, type, CRC.
const PNG_IEND: &[u8] = b"\0\0\0\0IEND\xae\x42\x60\x82";
const JPEG_MAGIC: &[u8] = b"\xff\xd8\xff";
const JPEG_EOI: &[u8] = b"\xff\xd9";
/// How much of a file's end is read: enough for trailing padding after a JPEG's end marker.
const TAIL: u64 = 4096;

/// Why a file is not a whole image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incomplete {
    /// Not a PNG, JPEG or WebP at all (empty, an error page, …).
    NotAnImage,
    /// A PNG without its final `IEND` chunk.
    PngTruncated,
    /// A JPEG without its end-of-image marker.
    JpegTruncated,
    /// A WebP shorter than its RIFF header says.
    WebpTruncated,
}

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Incomplete::NotAnImage => "not a PNG, JPEG or WebP image",
            Incomplete::PngTruncated => "a truncated PNG (no `IEND` chunk at its end)",
            Incomplete::JpegTruncated => "a truncated JPEG (no end-of-image marker)",
            Incomplete::WebpTruncated => "a truncated WebP (shorter than its header says)",
        })
    }
}

/// Checks an image from its first bytes (at least 12 when the file has them), its last bytes (up to
/// 4 KiB) and its length.
pub fn check_parts(head: &[u8], tail: &[u8], len: u64) -> Result<(), Incomplete> {
    if head.starts_with(PNG_MAGIC) {
        // The magic itself cannot double as the end: a whole PNG has a header chunk in between.
        return if len >= (PNG_MAGIC.len() + PNG_IEND.len()) as u64 && tail.ends_with(PNG_IEND) {
            Ok(())
        } else {
            Err(Incomplete::PngTruncated)
        };
    }
    if head.starts_with(JPEG_MAGIC) {
        // Some encoders pad after the marker; entropy-coded data never contains `FFD9`.
        let end = tail
            .iter()
            .rposition(|b| !matches!(b, 0 | b' ' | b'\t' | b'\r' | b'\n'))
            .map_or(0, |i| i + 1);
        return if len > 4 && tail[..end].ends_with(JPEG_EOI) {
            Ok(())
        } else {
            Err(Incomplete::JpegTruncated)
        };
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        let stated = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
        return if len >= stated + 8 {
            Ok(())
        } else {
            Err(Incomplete::WebpTruncated)
        };
    }
    Err(Incomplete::NotAnImage)
}

/// [`check_parts`] on the file at `path`. Reads at most 4 KiB plus 16 bytes.
pub fn check_file(path: &Path) -> io::Result<Result<(), Incomplete>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut head = Vec::with_capacity(16);
    (&mut file).take(16).read_to_end(&mut head)?;
    let from = len.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::with_capacity((len - from) as usize);
    file.take(TAIL).read_to_end(&mut tail)?;
    Ok(check_parts(&head, &tail, len))
}

/// Whether the file at `path` is a whole image; an unreadable file is not.
pub fn is_complete(path: &Path) -> bool {
    matches!(check_file(path), Ok(Ok(())))
}

/// Why a downloaded result at `path` was refused, for the task's error: a truncated image, or
/// something that is no image at all (an HTML or text page, named as such).
pub fn describe_download(path: &Path) -> String {
    match check_file(path) {
        Ok(Err(Incomplete::NotAnImage)) => {
            let mut head = Vec::new();
            if let Ok(file) = File::open(path) {
                let _ = file.take(256).read_to_end(&mut head);
            }
            let text = String::from_utf8_lossy(&head)
                .trim_start()
                .to_ascii_lowercase();
            let what = if head.is_empty() {
                "it was empty".to_owned()
            } else if text.starts_with("<!doctype html") || text.starts_with("<html") {
                "it is an HTML page".to_owned()
            } else if text.starts_with('<') {
                "it is an XML or HTML document".to_owned()
            } else if text.starts_with('{') {
                "it is a JSON document".to_owned()
            } else {
                "it does not start like a PNG, JPEG or WebP".to_owned()
            };
            format!("the result is not an image ({what}); it was not cached")
        }
        Ok(Err(incomplete)) => format!("the image ended early ({incomplete}); it was not cached"),
        Ok(Ok(())) => "the image was checked twice with different results".to_owned(),
        Err(e) => format!("the download could not be read back: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8]) -> Result<(), Incomplete> {
        let tail = &bytes[bytes.len().saturating_sub(TAIL as usize)..];
        check_parts(&bytes[..bytes.len().min(16)], tail, bytes.len() as u64)
    }

    #[test]
    fn a_whole_png_passes_and_every_truncation_of_it_fails() {
        let png = crate::emulator::placeholder_png::render(64, 48, b"seed");
        assert_eq!(check(&png), Ok(()));
        for cut in [0, 1, 8, 20, png.len() / 2, png.len() - 1] {
            assert!(check(&png[..cut]).is_err(), "cut at {cut}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        std::fs::write(&path, &png).unwrap();
        assert!(is_complete(&path));
        std::fs::write(&path, &png[..png.len() / 2]).unwrap();
        assert_eq!(check_file(&path).unwrap(), Err(Incomplete::PngTruncated));
        assert!(!is_complete(&dir.path().join("missing.png")));
    }

    #[test]
    fn jpeg_needs_its_end_marker_padding_allowed() {
        let mut jpeg = b"\xff\xd8\xff\xe0\0\x10JFIF\0".to_vec();
        jpeg.extend(std::iter::repeat_n(0x55, 100));
        assert_eq!(check(&jpeg), Err(Incomplete::JpegTruncated));
        jpeg.extend(b"\xff\xd9");
        assert_eq!(check(&jpeg), Ok(()));
        jpeg.extend(b"\0\0\n");
        assert_eq!(check(&jpeg), Ok(()));
    }

    #[test]
    fn webp_is_checked_against_its_stated_length() {
        let mut webp = b"RIFF".to_vec();
        webp.extend(20u32.to_le_bytes());
        webp.extend(b"WEBPVP8 ");
        webp.extend([0; 12]);
        assert_eq!(check(&webp), Ok(()));
        assert_eq!(check(&webp[..20]), Err(Incomplete::WebpTruncated));
    }

    #[test]
    fn anything_else_is_not_an_image() {
        assert_eq!(check(b""), Err(Incomplete::NotAnImage));
        assert_eq!(check(b"<html>error</html>"), Err(Incomplete::NotAnImage));
    }
}
