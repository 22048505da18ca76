//! Image bytes as the protocol carries them: format sniffing (PNG, JPEG, WebP) with the size in a
//! PNG or JPEG header, standard base64, and `data:{MIME};base64,…` URIs. Shared by the client (local
//! inputs sent inline) and the emulator (which checks what it receives).

use base64::Engine;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

use crate::size::Size;

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decoding accepts what clients send: padding or none, and bits past the last byte unchecked (as
/// the service's own decoder is not documented to check them).
const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);

/// Standard or URL-safe base64, padding optional, ASCII whitespace ignored. A `=` anywhere but at
/// the end is an error.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let compact: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    GeneralPurpose::new(&alphabet::STANDARD, LENIENT)
        .decode(&compact)
        .or_else(|_| GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT).decode(&compact))
        .ok()
}

/// The bytes of a `data:{MIME};base64,{DATA}` URI; `None` when it is not one.
pub fn data_uri_bytes(uri: &str) -> Option<Vec<u8>> {
    let (meta, data) = uri.strip_prefix("data:")?.split_once(',')?;
    if !meta.to_ascii_lowercase().ends_with(";base64") {
        return None;
    }
    base64_decode(data)
}

/// An image format the service accepts, by its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
    Webp,
}

pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
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
pub fn image_size(bytes: &[u8]) -> Option<Size> {
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

impl ImageFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Webp => "webp",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Webp => "image/webp",
        }
    }
}

/// `data:image/png;base64,…` for an image's bytes.
pub fn data_uri(bytes: &[u8]) -> String {
    let mime = sniff(bytes).map_or("application/octet-stream", ImageFormat::mime);
    format!("data:{mime};base64,{}", base64_encode(bytes))
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
        assert_eq!(base64_decode("Zm9v\nYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("-_8").unwrap(), [0xFB, 0xFF]);
        assert_eq!(base64_decode("+/8=").unwrap(), [0xFB, 0xFF]);
    }

    /// The hand-written decoder skipped a `=` wherever it stood, so two padded chunks glued
    /// together read as one payload; the `base64` crate refuses it.
    #[test]
    fn base64_refuses_padding_in_the_middle() {
        assert!(base64_decode("Zm8=Zm8=").is_none());
        assert!(base64_decode("Zm=9vYmFy").is_none());
        assert!(data_uri_bytes("data:image/png;base64,iVBO=Rw0KGgo=").is_none());
    }

    #[test]
    fn reads_data_uris_and_image_headers() {
        let png = crate::emulator::placeholder_png::render(64, 48, b"x");
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
}
