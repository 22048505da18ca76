//! `Progress`: a build's live progress bar (indicatif), drawn only when stderr is a terminal and
//! `--quiet` is off: tasks done of the total, tasks in flight, images done, money spent so far, and an
//! ETA from the models' recorded latencies (the generations left, in waves of the build's `jobs`, each
//! as long as the median latency). Status lines printed through [`Progress::suspend`] appear above it.
//! It belongs to one build and is dropped with it: no global state.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::money::Money;
use crate::term::printer::Printer;

pub struct Progress {
    bar: Option<ProgressBar>,
    pace: Pace,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    images: u32,
    spent: Money,
    /// Generations not yet finished.
    generations_left: usize,
}

/// How the ETA is estimated: the median latency of the models involved and the tasks in flight at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pace {
    pub median_latency: Option<Duration>,
    pub jobs: usize,
}

impl Pace {
    /// The median of `latencies` (seconds), with `jobs` tasks at once.
    pub fn from_latencies(latencies: &[f64], jobs: usize) -> Pace {
        let mut sorted: Vec<f64> = latencies
            .iter()
            .copied()
            .filter(|l| l.is_finite())
            .collect();
        sorted.sort_by(f64::total_cmp);
        Pace {
            median_latency: sorted
                .get(sorted.len() / 2)
                .map(|s| Duration::from_secs_f64(s.max(0.0))),
            jobs: jobs.max(1),
        }
    }

    /// The time left for `generations` unfinished generations, or `None` without a latency.
    pub fn eta(&self, generations: usize) -> Option<Duration> {
        let latency = self.median_latency?;
        let waves = generations.div_ceil(self.jobs.max(1)) as u32;
        Some(latency * waves)
    }
}

impl Progress {
    /// A bar for `total` tasks, `generations` of them paid generations; hidden unless stderr is a
    /// terminal and output is not quiet.
    pub fn new(printer: &Printer, total: usize, generations: usize, pace: Pace) -> Progress {
        let bar = (printer.tty && !printer.quiet && total > 0).then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total as u64),
                ProgressDrawTarget::stderr_with_hz(10),
            );
            let template = if printer.color {
                "{prefix:>12.cyan.bold} [{bar:24}] {pos}/{len} tasks, {msg}"
            } else {
                "{prefix:>12} [{bar:24}] {pos}/{len} tasks, {msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix("Building");
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        let progress = Progress {
            bar,
            pace,
            state: Mutex::new(State {
                generations_left: generations,
                ..State::default()
            }),
        };
        progress.redraw();
        progress
    }

    /// Runs `print` with the bar cleared, then redraws it.
    pub fn suspend(&self, print: impl FnOnce()) {
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    /// A generation was submitted.
    pub fn submitted(&self) {
        self.with_state(|s| s.in_flight += 1);
    }

    /// A task finished: `generated` images for `spent` (a restore: zero and zero).
    pub fn finished(&self, was_generation: bool, images: u32, spent: Money) {
        self.with_state(|s| {
            if was_generation {
                s.in_flight = s.in_flight.saturating_sub(1);
                s.generations_left = s.generations_left.saturating_sub(1);
            }
            s.images += images;
            s.spent += spent;
        });
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// The total shrank (a waiting task turned out fresh) or grew.
    pub fn set_total(&self, total: usize) {
        if let Some(bar) = &self.bar {
            bar.set_length(total as u64);
        }
    }

    /// Removes the bar.
    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn with_state(&self, f: impl FnOnce(&mut State)) {
        {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut state);
        }
        self.redraw();
    }

    fn redraw(&self) {
        let Some(bar) = &self.bar else { return };
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut message = format!(
            "{} in flight, {} image{}, {} spent",
            state.in_flight,
            state.images,
            if state.images == 1 { "" } else { "s" },
            state.spent
        );
        if let Some(eta) = self.pace.eta(state.generations_left)
            && state.generations_left > 0
        {
            let _ = write!(message, ", ETA {}s", eta.as_secs().max(1));
        }
        bar.set_message(message);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_counts_waves_of_the_median_latency() {
        let pace = Pace::from_latencies(&[10.0, 30.0, 20.0], 2);
        assert_eq!(pace.median_latency, Some(Duration::from_secs(20)));
        assert_eq!(pace.eta(3), Some(Duration::from_secs(40)));
        assert_eq!(Pace::from_latencies(&[], 2).eta(3), None);
    }
}
