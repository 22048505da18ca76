//! `Size`: an image size as DashScope writes it, `W*H` with an asterisk.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl Size {
    pub const fn new(width: u32, height: u32) -> Size {
        Size { width, height }
    }

    pub fn pixels(self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// Width over height.
    pub fn aspect(self) -> f64 {
        f64::from(self.width) / f64::from(self.height)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}*{}", self.width, self.height)
    }
}

impl FromStr for Size {
    type Err = String;

    /// Accepts `1024*1024`; also `1024x1024` and `1024×1024`, which people write by habit.
    fn from_str(s: &str) -> Result<Size, String> {
        let s = s.trim();
        let (w, h) = s.split_once(['*', 'x', 'X', '×']).ok_or_else(|| {
            format!("`{s}` is not a size: write it as `WIDTH*HEIGHT`, e.g. `1024*1024`")
        })?;
        let parse = |part: &str| {
            part.trim()
                .parse::<u32>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| {
                    format!(
                        "`{s}` is not a size: `{part}` is not a positive whole number of pixels"
                    )
                })
        };
        Ok(Size::new(parse(w)?, parse(h)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_wire_form_and_habits() {
        assert_eq!("1024*768".parse::<Size>().unwrap(), Size::new(1024, 768));
        assert_eq!("1024x768".parse::<Size>().unwrap(), Size::new(1024, 768));
        assert!("1024".parse::<Size>().is_err());
        assert!("0*10".parse::<Size>().is_err());
        assert_eq!(Size::new(1664, 928).to_string(), "1664*928");
    }
}
