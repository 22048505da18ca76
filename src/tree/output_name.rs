//! Output naming: a task's `out_dir` and `filename` pattern rendered to project-relative paths.
//! Placeholders: `{id}` / `{task_id}`, `{index}` (1-based), `{n}`, `{key}` (12 hex digits of the cache
//! key) and the seed's `{timestamp}`, the generation time, so a name is stable across no-op builds.

pub use crate::clock::{civil_from_days, format_timestamp, now_unix};
use crate::compile::cache_key::CacheKey;
use crate::plan::task::OutputSpec;

/// The placeholders a pattern may use.
pub const PLACEHOLDERS: [&str; 6] = ["id", "task_id", "index", "n", "key", "timestamp"];

/// The project-relative paths of a task's `n` images.
pub fn render(
    spec: &OutputSpec,
    id: &str,
    n: u32,
    key: &CacheKey,
    generated_at: i64,
) -> Vec<String> {
    let dir = spec.dir.trim_end_matches('/');
    let prefix = if dir.is_empty() || dir == "." {
        String::new()
    } else {
        format!("{dir}/")
    };
    (1..=n)
        .map(|index| {
            let mut path = String::with_capacity(prefix.len() + spec.filename.len() + id.len());
            path.push_str(&prefix);
            expand(&spec.filename, &mut path, |name, out| match name {
                "id" | "task_id" => out.push_str(id),
                "index" => out.push_str(&index.to_string()),
                "n" => out.push_str(&n.to_string()),
                "key" => out.push_str(&key.to_hex()[..12]),
                "timestamp" => out.push_str(&format_timestamp(generated_at)),
                _ => unreachable!("only known placeholders are expanded"),
            });
            path
        })
        .collect()
}

/// Appends `pattern` to `out`, each `{name}` of [`PLACEHOLDERS`] replaced by `value`, in one pass
/// (a large no-op renders every task's names). No value holds a `{` (ids cannot), so this is the
/// same as replacing each placeholder in turn.
fn expand(pattern: &str, out: &mut String, value: impl Fn(&str, &mut String)) {
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let known = after
            .find('}')
            .map(|close| &after[..close])
            .filter(|name| PLACEHOLDERS.contains(name));
        if let Some(name) = known {
            value(name, out);
            rest = &after[name.len() + 1..];
        } else {
            out.push('{');
            rest = after;
        }
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_expansion_matches_replacing_each_placeholder_in_turn() {
        let key = CacheKey::from_hex(&"ab".repeat(32)).unwrap();
        let patterns = [
            "{id}.png",
            "{task_id}-{index}-of-{n}-{key}.png",
            "{{id}}_{index}{index}.png",
            "{unknown}{id}{.png",
            "{timestamp}/{id",
            "}{}{n}{",
            "plain.png",
        ];
        for pattern in patterns {
            let spec = OutputSpec {
                dir: "out/".into(),
                filename: pattern.into(),
            };
            let chained: Vec<String> = (1..=3)
                .map(|index| {
                    let name = pattern
                        .replace("{id}", "hero-1.a")
                        .replace("{task_id}", "hero-1.a")
                        .replace("{index}", &index.to_string())
                        .replace("{n}", "3")
                        .replace("{key}", &key.short())
                        .replace("{timestamp}", &format_timestamp(1_760_887_800));
                    format!("out/{name}")
                })
                .collect();
            assert_eq!(
                render(&spec, "hero-1.a", 3, &key, 1_760_887_800),
                chained,
                "{pattern}"
            );
        }
    }

    #[test]
    fn renders_every_placeholder() {
        let key = CacheKey::from_hex(&"ab".repeat(32)).unwrap();
        let spec = OutputSpec {
            dir: "out/x/".into(),
            filename: "{task_id}_{timestamp}_{index}of{n}_{key}.png".into(),
        };
        assert_eq!(
            render(&spec, "hero", 2, &key, 1_760_887_800),
            vec![
                "out/x/hero_20251019-153000_1of2_abababababab.png",
                "out/x/hero_20251019-153000_2of2_abababababab.png"
            ]
        );
    }
}
