//! Placeholder images for the emulator: a deterministic RGB PNG of any size whose look (a diagonal
//! two-colour gradient, a few solid blocks and a band) derives from a blake3 of some seed material, so
//! equal requests give identical bytes and different prompts, seeds or indices give different ones.

use png::{BitDepth, ColorType, Compression, Encoder, Filter};

/// Solid rectangles laid over the gradient.
const BLOCKS: usize = 4;

/// The picture's parameters, all drawn from the hash of the seed material.
struct Look {
    from: [u8; 3],
    to: [u8; 3],
    /// `(x0, y0, x1, y1, colour)`, in pixels, half-open.
    blocks: Vec<(u32, u32, u32, u32, [u8; 3])>,
    /// A horizontal band `(y0, y1, colour)`.
    band: (u32, u32, [u8; 3]),
}

/// Renders a `width`×`height` RGB8 PNG whose look derives from `seed_material`. Zero sides are raised
/// to one pixel (PNG has no empty images).
pub fn render(width: u32, height: u32, seed_material: &[u8]) -> Vec<u8> {
    let (width, height) = (width.max(1), height.max(1));
    let look = Look::from_material(width, height, seed_material);
    let mut out = Vec::new();
    let mut encoder = Encoder::new(&mut out, width, height);
    encoder.set_color(ColorType::Rgb);
    encoder.set_depth(BitDepth::Eight);
    // Sub suits the diagonal gradient (each pixel is close to its left neighbour) and, unlike the
    // adaptive default, costs one pass: debug builds of the tests stay fast.
    encoder.set_compression(Compression::Fast);
    encoder.set_filter(Filter::Sub);
    let mut writer = encoder
        .write_header()
        .expect("a PNG header with nonzero sides always encodes into a Vec");
    writer
        .write_image_data(&look.pixels(width, height))
        .expect("pixel data of exactly width*height*3 bytes always encodes into a Vec");
    writer
        .finish()
        .expect("finishing a PNG into a Vec cannot fail");
    out
}

impl Look {
    fn from_material(width: u32, height: u32, material: &[u8]) -> Look {
        let mut bytes = [0u8; 64];
        blake3::Hasher::new()
            .update(material)
            .finalize_xof()
            .fill(&mut bytes);
        let colour = |i: usize| [bytes[i], bytes[i + 1], bytes[i + 2]];
        let blocks = (0..BLOCKS)
            .map(|k| {
                let b = &bytes[12 + k * 7..12 + k * 7 + 7];
                let x0 = scale(b[0], width);
                let y0 = scale(b[1], height);
                let x1 = (x0 + scale(b[2], width / 3).max(1)).min(width);
                let y1 = (y0 + scale(b[3], height / 3).max(1)).min(height);
                (x0, y0, x1, y1, [b[4], b[5], b[6]])
            })
            .collect();
        let band_y0 = scale(bytes[40], height);
        let band = (band_y0, (band_y0 + height / 16 + 1).min(height), colour(41));
        Look {
            from: colour(0),
            to: colour(3),
            blocks,
            band,
        }
    }

    /// The gradient's colour for each diagonal `x + y`, packed RGB: row `y` is the slice starting
    /// at pixel `y`, so building a row is one copy.
    fn diagonal(&self, width: u32, height: u32) -> Vec<u8> {
        let span = u64::from(width) + u64::from(height);
        (0..span)
            .flat_map(|d| mix(self.from, self.to, (d * 255 / span) as u8))
            .collect()
    }

    /// The image as packed RGB rows, top to bottom.
    fn pixels(&self, width: u32, height: u32) -> Vec<u8> {
        let row_len = width as usize * 3;
        let mut data = vec![0u8; row_len * height as usize];
        let gradient = self.diagonal(width, height);
        for (y, row) in (0..height).zip(data.chunks_exact_mut(row_len)) {
            let start = y as usize * 3;
            row.copy_from_slice(&gradient[start..start + row_len]);
            if (self.band.0..self.band.1).contains(&y) {
                fill(row, 0, width, self.band.2);
            }
            for &(x0, y0, x1, y1, colour) in &self.blocks {
                if (y0..y1).contains(&y) {
                    fill(row, x0, x1, colour);
                }
            }
        }
        data
    }
}

/// `byte/256` of `extent`, a position within it.
fn scale(byte: u8, extent: u32) -> u32 {
    (u64::from(byte) * u64::from(extent) / 256) as u32
}

/// Linear mix of two colours, `t` from 0 (all `a`) to 255 (all `b`).
fn mix(a: [u8; 3], b: [u8; 3], t: u8) -> [u8; 3] {
    let t = u16::from(t);
    let channel = |i: usize| ((u16::from(a[i]) * (255 - t) + u16::from(b[i]) * t) / 255) as u8;
    [channel(0), channel(1), channel(2)]
}

/// Paints pixels `x0..x1` of an RGB row.
fn fill(row: &mut [u8], x0: u32, x1: u32, colour: [u8; 3]) {
    for px in row[x0 as usize * 3..x1 as usize * 3].chunks_exact_mut(3) {
        px.copy_from_slice(&colour);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> (u32, u32, ColorType, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info.width, info.height, info.color_type, buf)
    }

    #[test]
    fn decodes_with_the_requested_dimensions() {
        for (w, h) in [(1024, 1024), (1664, 928), (7, 3), (1, 1)] {
            let (dw, dh, colour, data) = decode(&render(w, h, b"a cat"));
            assert_eq!((dw, dh, colour), (w, h, ColorType::Rgb));
            assert_eq!(data.len(), (w * h * 3) as usize);
        }
    }

    #[test]
    fn same_material_gives_identical_bytes() {
        assert_eq!(render(640, 480, b"seed 42"), render(640, 480, b"seed 42"));
    }

    #[test]
    fn different_material_gives_different_pixels() {
        let a = decode(&render(512, 512, b"prompt a")).3;
        let b = decode(&render(512, 512, b"prompt b")).3;
        assert_ne!(a, b);
    }

    #[test]
    fn the_image_is_not_one_flat_colour() {
        let data = decode(&render(256, 256, b"anything")).3;
        assert!(data.chunks_exact(3).any(|px| px != &data[..3]));
    }

    #[test]
    fn zero_sides_become_one_pixel() {
        let (w, h, _, _) = decode(&render(0, 0, b"x"));
        assert_eq!((w, h), (1, 1));
    }

    #[test]
    fn renders_the_largest_wan_size() {
        let (w, h, _, _) = decode(&render(1440, 1440, b"big"));
        assert_eq!((w, h), (1440, 1440));
    }
}
