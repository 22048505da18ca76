//! The size DashScope accepts for one image input, checked from the file's metadata before wanx
//! reads it: a 1 GB file named as an input is refused at once (exit 2, naming it and the limit)
//! instead of being read whole, hashed, encoded and sent to be refused. Every model that takes
//! images (wanx2.1-imageedit's `base_image_url` and mask, wan2.5-i2i's `images`, wanx-v1's
//! `ref_img`) accepts at most 10 MB (protocol §7).

use std::path::Path;

/// 10 MB, the limit of every image input (protocol §7).
pub const MAX_INPUT_BYTES: u64 = 10 * 1024 * 1024;

/// `(message, hint)` when the file at `full` (written `shown` in the plan) is larger than the API
/// accepts. A file whose size cannot be read is left to the reader, which reports it.
pub fn check(full: &Path, shown: &str) -> Option<(String, String)> {
    let len = std::fs::metadata(full).ok()?.len();
    (len > MAX_INPUT_BYTES).then(|| {
        (
            format!(
                "the input `{shown}` is {}, more than the 10 MB DashScope accepts for an image input",
                human(len)
            ),
            "resize or recompress the image (PNG, JPEG or WebP) below 10 MB".to_owned(),
        )
    })
}

fn human(bytes: u64) -> String {
    const MB: f64 = 1024.0 * 1024.0;
    let mb = bytes as f64 / MB;
    if mb >= 1024.0 {
        format!("{:.1} GB", mb / 1024.0)
    } else {
        format!("{mb:.1} MB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_gigabyte_is_refused_and_a_small_file_passes() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.png");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let (message, _) = check(&big, "big.png").unwrap();
        assert!(
            message.contains("1.0 GB") && message.contains("10 MB"),
            "{message}"
        );
        let small = dir.path().join("small.png");
        std::fs::write(&small, [0u8; 100]).unwrap();
        assert_eq!(check(&small, "small.png"), None);
    }
}
