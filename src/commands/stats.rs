//! `wanx stats`: what the local cache holds and what the project's builds cost and saved, the way
//! `ccache -s` and `sccache --show-stats` report theirs. Cache size and entries come from the blob
//! index; images generated, restored, spent and saved from the run ledger by month (spent and saved as
//! the build report defines them); spent by model from the stored results. Real and emulated money are
//! never added together. Read-only: it opens the store and writes nothing else.

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::money::Money;
use crate::project::byte_size::human_size;
use crate::project::manifest::Manifest;
use crate::store::{ModelFigures, MonthFigures, Store};
use crate::term::printer::Printer;

#[derive(Serialize)]
struct Stats {
    cache_bytes: u64,
    cache_max_bytes: u64,
    cache_images: u64,
    results: u64,
    by_model: Vec<ModelRow>,
    by_month: Vec<MonthRow>,
}

#[derive(Serialize)]
struct ModelRow {
    model: String,
    emulated: bool,
    results: u64,
    images: u64,
    images_billed: u64,
    spent: f64,
    images_restored: u64,
    saved: f64,
}

#[derive(Serialize)]
struct MonthRow {
    month: String,
    emulated: bool,
    builds: u64,
    generated: u64,
    restored: u64,
    images_generated: u64,
    spent: f64,
    saved: f64,
}

/// `wanx stats [--json]`.
pub fn stats(dir: Option<&Path>, json: bool, printer: &Printer) -> Result<()> {
    let manifest = Manifest::in_dir(dir)?;
    let state_dir = manifest.state_dir();
    let (size, images, models, months) = if state_dir.join(crate::store::DB_FILE).exists() {
        let store = Store::open(&state_dir)?;
        let (size, images) = store.blob_totals()?;
        (
            size,
            images,
            store.figures_by_model()?,
            store.figures_by_month()?,
        )
    } else {
        (0, 0, Vec::new(), Vec::new())
    };
    let max = manifest.cache_max_size();
    let stats = Stats {
        cache_bytes: size,
        cache_max_bytes: max,
        cache_images: images,
        results: models.iter().map(|m| m.results).sum(),
        by_model: models.iter().map(model_row).collect(),
        by_month: months.iter().map(month_row).collect(),
    };
    if json {
        printer.data(&serde_json::to_string_pretty(&stats).expect("stats serialize"));
        return Ok(());
    }
    for line in human(&stats, &models, &months) {
        printer.data(&line);
    }
    Ok(())
}

fn model_row(m: &ModelFigures) -> ModelRow {
    ModelRow {
        model: m.model.clone(),
        emulated: m.emulated,
        results: m.results,
        images: m.images,
        images_billed: m.images_billed,
        spent: m.spent.as_yuan(),
        images_restored: m.images_restored,
        saved: m.saved.as_yuan(),
    }
}

fn month_row(m: &MonthFigures) -> MonthRow {
    MonthRow {
        month: m.month.clone(),
        emulated: m.emulated,
        builds: m.runs,
        generated: m.generated,
        restored: m.restored,
        images_generated: m.images_generated,
        spent: m.spent.as_yuan(),
        saved: m.saved.as_yuan(),
    }
}

fn human(stats: &Stats, models: &[ModelFigures], months: &[MonthFigures]) -> Vec<String> {
    let percent = if stats.cache_max_bytes == 0 {
        100.0
    } else {
        stats.cache_bytes as f64 * 100.0 / stats.cache_max_bytes as f64
    };
    let mut out = vec![
        format!(
            "Cache size          {} / {} ({percent:.1} %)",
            human_size(stats.cache_bytes),
            human_size(stats.cache_max_bytes)
        ),
        format!("Cached images       {}", stats.cache_images),
        format!("Cached results      {}", stats.results),
    ];
    for emulated in [false, true] {
        let label = if emulated {
            " (emulated, no real money)"
        } else {
            ""
        };
        let months: Vec<&MonthFigures> = months.iter().filter(|m| m.emulated == emulated).collect();
        let models: Vec<&ModelFigures> = models.iter().filter(|m| m.emulated == emulated).collect();
        if months.is_empty() && models.is_empty() {
            continue;
        }
        let sum = |f: fn(&MonthFigures) -> u64| months.iter().map(|m| f(m)).sum::<u64>();
        let spent: Money = months.iter().map(|m| m.spent).sum();
        let saved: Money = months.iter().map(|m| m.saved).sum();
        out.push(String::new());
        out.push(format!("Builds{label}"));
        out.push(format!("  builds            {}", sum(|m| m.runs)));
        out.push(format!(
            "  images generated  {} (in {} tasks)",
            sum(|m| m.images_generated),
            sum(|m| m.generated)
        ));
        out.push(format!("  tasks restored    {}", sum(|m| m.restored)));
        out.push(format!("  spent             {spent}"));
        out.push(format!("  saved             {saved}"));
        if !months.is_empty() {
            out.push(format!(
                "  {:<16}{:>6}{:>10}{:>12}{:>12}",
                "by month", "images", "restored", "spent", "saved"
            ));
            for m in &months {
                out.push(format!(
                    "    {:<14}{:>6}{:>10}{:>12}{:>12}",
                    m.month,
                    m.images_generated,
                    m.restored,
                    m.spent.to_string(),
                    m.saved.to_string()
                ));
            }
        }
        if !models.is_empty() {
            out.push(format!(
                "  {:<28}{:>8}{:>12}{:>10}{:>12}",
                "by model", "billed", "spent", "restored", "saved"
            ));
            for m in &models {
                let name = if m.model.is_empty() {
                    "(earlier builds)"
                } else {
                    m.model.as_str()
                };
                out.push(format!(
                    "    {:<26}{:>8}{:>12}{:>10}{:>12}",
                    name,
                    m.images_billed,
                    m.spent.to_string(),
                    m.images_restored,
                    m.saved.to_string()
                ));
            }
        }
    }
    out
}
