//! `word_diff`: the changed region of a long text, by words, as `git diff --word-diff` shows it:
//! the common words before and after the change are cut to a little context and marked `…`.

/// Words of context kept on each side of the changed region.
const CONTEXT: usize = 2;

/// `("…volumetric light, highly detailed", "…volumetric light, oil on canvas")`: the old and new
/// text cut to the changed region with `CONTEXT` words around it. Texts of a few words are kept whole.
pub fn changed_region(old: &str, new: &str) -> (String, String) {
    let a: Vec<&str> = old.split_whitespace().collect();
    let b: Vec<&str> = new.split_whitespace().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let max_suffix = a.len().min(b.len()) - prefix;
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(max_suffix)
        .take_while(|(x, y)| x == y)
        .count();
    let start = prefix.saturating_sub(CONTEXT);
    let cut = |words: &[&str]| {
        let end = (words.len() - suffix + CONTEXT).min(words.len());
        let mut s = String::new();
        if start > 0 {
            s.push('…');
        }
        s.push_str(&words[start..end].join(" "));
        if end < words.len() {
            s.push('…');
        }
        s
    };
    (cut(&a), cut(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_changed_region_with_context() {
        let (a, b) = changed_region(
            "a lighthouse at dusk, volumetric light, highly detailed",
            "a lighthouse at dusk, volumetric light, oil on canvas",
        );
        assert_eq!(a, "…volumetric light, highly detailed");
        assert_eq!(b, "…volumetric light, oil on canvas");
    }

    #[test]
    fn a_change_in_the_middle_keeps_context_on_both_sides() {
        let (a, b) = changed_region(
            "one two three four five six seven",
            "one two three FOUR five six seven",
        );
        assert_eq!(a, "…two three four five six…");
        assert_eq!(b, "…two three FOUR five six…");
    }

    #[test]
    fn short_texts_are_whole() {
        assert_eq!(
            changed_region("a cat", "a dog"),
            ("a cat".to_owned(), "a dog".to_owned())
        );
        assert_eq!(
            changed_region("cat", "cat sitting"),
            ("cat".to_owned(), "cat sitting".to_owned())
        );
    }
}
