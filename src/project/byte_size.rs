//! Sizes in bytes as a user writes and reads them: `[cache] max_size = "5GB"` and `wanx gc --max-size`
//! parse with [`parse_size`]; `wanx gc` and `wanx stats` print with [`human_size`]. A leaf, so that the
//! manifest can validate `max_size` without knowing the commands that apply it.

/// 5 GB, ccache's default bound.
pub const DEFAULT_MAX_SIZE: u64 = 5_000_000_000;

/// Parses `"5GB"`, `"500 MB"`, `"1.5GiB"`, `"0"` into bytes (decimal units, and binary with `i`).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("`{other}` is not a size unit in `{text}`")),
    };
    let bytes = value * factor;
    if !bytes.is_finite() || bytes < 0.0 {
        return Err(format!("`{text}` is not a size"));
    }
    Ok(bytes as u64)
}

/// `1.2 GB`, `340 MB`, `12 kB`, `5 B`.
pub fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_decimal_and_binary_units() {
        assert_eq!(parse_size("5GB"), Ok(5_000_000_000));
        assert_eq!(parse_size("500 MB"), Ok(500_000_000));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 XB").is_err());
    }
}
