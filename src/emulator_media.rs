//! The byte formats the emulator reads and writes around media inputs: base64 and `data:` URIs,
//! image-format sniffing with the width and height of PNG and JPEG headers, and a minimal
//! `multipart/form-data` parser (RFC 7578) for the OSS-style upload form. Small and hand-written so
//! the emulator adds no dependency.

use hyper::body::Bytes;

use crate::size::Size;

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard or URL-safe base64, padding optional, ASCII whitespace ignored.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => continue,
            _ => return None,
        };
        acc = acc << 6 | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// The bytes of a `data:{MIME};base64,{DATA}` URI; `None` when it is not one.
pub(crate) fn data_uri_bytes(uri: &str) -> Option<Vec<u8>> {
    let (meta, data) = uri.strip_prefix("data:")?.split_once(',')?;
    if !meta.to_ascii_lowercase().ends_with(";base64") {
        return None;
    }
    base64_decode(data)
}

/// An image format the service accepts, by its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ImageFormat {
    Png,
    Jpeg,
    Webp,
}

pub(crate) fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(ImageFormat::Webp)
    } else {
        None
    }
}

/// The width and height in an image's header (PNG IHDR, JPEG SOF); `None` for WebP or a header
/// that cannot be read.
pub(crate) fn image_size(bytes: &[u8]) -> Option<Size> {
    match sniff(bytes)? {
        ImageFormat::Png => {
            let ihdr = bytes.get(12..24).filter(|h| &h[..4] == b"IHDR")?;
            let width = u32::from_be_bytes(ihdr[4..8].try_into().ok()?);
            let height = u32::from_be_bytes(ihdr[8..12].try_into().ok()?);
            Some(Size::new(width, height))
        }
        ImageFormat::Jpeg => jpeg_size(bytes),
        ImageFormat::Webp => None,
    }
}

/// Walks the JPEG marker segments to the first start-of-frame.
fn jpeg_size(bytes: &[u8]) -> Option<Size> {
    let mut at = 2;
    loop {
        while *bytes.get(at)? == 0xFF && *bytes.get(at + 1)? == 0xFF {
            at += 1;
        }
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(at + 1)?;
        let length = usize::from(u16::from_be_bytes([
            *bytes.get(at + 2)?,
            *bytes.get(at + 3)?,
        ]));
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            let height = u16::from_be_bytes([*bytes.get(at + 5)?, *bytes.get(at + 6)?]);
            let width = u16::from_be_bytes([*bytes.get(at + 7)?, *bytes.get(at + 8)?]);
            return Some(Size::new(u32::from(width), u32::from(height)));
        }
        at += 2 + length;
    }
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, PartialEq)]
pub(crate) struct Part {
    pub(crate) name: String,
    pub(crate) filename: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) data: Bytes,
}

/// The boundary of a `multipart/form-data; boundary=…` content type.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty())
    })
}

/// Splits a body into its parts; `Err` names what is malformed. Part data is shared, not copied.
pub(crate) fn parse_multipart(body: &Bytes, boundary: &str) -> Result<Vec<Part>, String> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut at = find(body, delimiter, 0).ok_or("no opening boundary")? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        at += line_end(&body[at..]).ok_or("a boundary line does not end")?;
        let head_end =
            find(body, b"\r\n\r\n", at).ok_or("a part has no blank line after its headers")?;
        let head =
            std::str::from_utf8(&body[at..head_end]).map_err(|_| "part headers are not UTF-8")?;
        let data_start = head_end + 4;
        let next = find(body, &[b"\r\n", delimiter].concat(), data_start)
            .ok_or("a part does not end with a boundary")?;
        parts.push(part(head, body.slice(data_start..next))?);
        at = next + 2 + delimiter.len();
    }
}

fn part(head: &str, data: Bytes) -> Result<Part, String> {
    let mut name = None;
    let mut filename = None;
    let mut content_type = None;
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad part header `{line}`"))?;
        let value = value.trim();
        if key.trim().eq_ignore_ascii_case("content-disposition") {
            for param in value.split(';').skip(1) {
                let Some((k, v)) = param.split_once('=') else {
                    continue;
                };
                let v = v.trim().trim_matches('"').to_owned();
                match k.trim() {
                    "name" => name = Some(v),
                    "filename" => filename = Some(v),
                    _ => {}
                }
            }
        } else if key.trim().eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_owned());
        }
    }
    let name = name.ok_or("a part has no `name` in its content-disposition")?;
    Ok(Part {
        name,
        filename,
        content_type,
        data,
    })
}

/// The length of the rest of the line including its CRLF.
fn line_end(bytes: &[u8]) -> Option<usize> {
    find(bytes, b"\r\n", 0).map(|i| i + 2)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for text in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0, 255, 128],
        ] {
            let encoded = base64_encode(text);
            assert_eq!(base64_decode(&encoded).unwrap(), text);
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_decode("Zm8").unwrap(), b"fo");
        assert!(base64_decode("Zm8*").is_none());
    }

    #[test]
    fn reads_data_uris_and_image_headers() {
        let png = crate::placeholder_png::render(64, 48, b"x");
        let uri = format!("data:image/png;base64,{}", base64_encode(&png));
        let bytes = data_uri_bytes(&uri).unwrap();
        assert_eq!(sniff(&bytes), Some(ImageFormat::Png));
        assert_eq!(image_size(&bytes), Some(Size::new(64, 48)));
        assert!(data_uri_bytes("data:image/png,raw").is_none());
        assert!(data_uri_bytes("http://x").is_none());
        assert_eq!(sniff(b"GIF89a"), None);
        // SOI, an APP0 segment, then SOF0 with height 600 and width 800.
        let jpeg = [
            &[0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0][..],
            &[0xFF, 0xC0, 0, 11, 8, 0x02, 0x58, 0x03, 0x20, 3, 0, 0, 0, 0],
        ]
        .concat();
        assert_eq!(image_size(&jpeg), Some(Size::new(800, 600)));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(ImageFormat::Webp));
    }

    #[test]
    fn parses_a_form_like_the_sdk_sends() {
        let body = Bytes::from_static(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\ndir/a.png\r\n\
              --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\
              Content-Type: image/png\r\n\r\n\x89PNG\r\n--X\r\n--XyZ--\r\n",
        );
        let delimiter = boundary("multipart/form-data; boundary=\"XyZ\"").unwrap();
        let parts = parse_multipart(&body, &delimiter).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].name.as_str(), &parts[0].data[..]),
            ("key", &b"dir/a.png"[..])
        );
        assert_eq!(parts[1].filename.as_deref(), Some("a.png"));
        assert_eq!(parts[1].content_type.as_deref(), Some("image/png"));
        assert_eq!(
            &parts[1].data[..],
            b"\x89PNG\r\n--X",
            "a near-boundary inside data is data"
        );
        assert!(boundary("application/json").is_none());
        assert!(parse_multipart(&Bytes::from_static(b"--XyZ\r\nno headers"), "XyZ").is_err());
    }
}
