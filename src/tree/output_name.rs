//! Output naming: a task's `out_dir` and `filename` pattern rendered to project-relative paths.
//! Placeholders: `{id}` / `{task_id}`, `{index}` (1-based), `{n}`, `{key}` (12 hex digits of the cache
//! key) and the seed's `{timestamp}`, the generation time, so a name is stable across no-op builds.

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

/// `20251019-153000`: UTC, sortable, safe in file names on every platform.
pub fn format_timestamp(unix: i64) -> String {
    let (y, m, d, hh, mm, ss) = civil(unix);
    format!("{y:04}{m:02}{d:02}-{hh:02}{mm:02}{ss:02}")
}

/// Unix seconds → (year, month, day, hour, minute, second) in UTC.
fn civil(unix: i64) -> (i64, u32, u32, u32, u32, u32) {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    let secs = unix.rem_euclid(86_400);
    (
        y,
        m,
        d,
        (secs / 3600) as u32,
        (secs % 3600 / 60) as u32,
        (secs % 60) as u32,
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
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

    #[test]
    fn formats_dates_across_leap_years() {
        assert_eq!(format_timestamp(0), "19700101-000000");
        assert_eq!(format_timestamp(951_782_400), "20000229-000000");
        assert_eq!(format_timestamp(1_798_761_599), "20261231-235959");
    }
}
