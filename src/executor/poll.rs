//! The poll schedule: how long to wait before each query of a remote task (`PollPolicy`,
//! `PollSchedule`). Pure: no clock, no network.

use std::time::Duration;

/// How often to query a task: `first` after submission, growing by half each time up to `max`.
#[derive(Clone, Copy, Debug)]
pub struct PollPolicy {
    pub first: Duration,
    pub max: Duration,
}

impl PollPolicy {
    /// The official SDK's schedule starts at 1 s and caps at 5 s (protocol §6).
    pub const REAL: PollPolicy = PollPolicy {
        first: Duration::from_secs(1),
        max: Duration::from_secs(5),
    };
    /// For the emulator: its tasks finish in well under a second.
    pub const EMULATED: PollPolicy = PollPolicy {
        first: Duration::from_millis(40),
        max: Duration::from_millis(200),
    };
}

/// How long to wait before each query of one task: the SDK's schedule without history, and a
/// schedule aimed at the model's observed latencies with it.
pub struct PollSchedule {
    pub(super) policy: PollPolicy,
    /// (early, late): the 10th and 90th percentile of past latencies, when known.
    pub(super) window: Option<(Duration, Duration)>,
    pub(super) step: u32,
    /// Queries since the task outlasted `late`.
    pub(super) overrun: u32,
    pub(super) elapsed: Duration,
}

impl PollSchedule {
    pub fn new(policy: PollPolicy, history: &[f64]) -> PollSchedule {
        let window = (history.len() >= 3).then(|| {
            let mut sorted: Vec<f64> = history
                .iter()
                .copied()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .collect();
            sorted.sort_by(f64::total_cmp);
            let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
            (
                Duration::from_secs_f64(at(0.1) * 0.9),
                Duration::from_secs_f64(at(0.9)),
            )
        });
        PollSchedule {
            policy,
            window,
            step: 0,
            overrun: 0,
            elapsed: Duration::ZERO,
        }
    }

    /// The next wait.
    pub fn next_wait(&mut self) -> Duration {
        self.step += 1;
        let wait = match self.window {
            // Sleep through the part of the distribution where results never arrive, then poll
            // often enough inside it to detect completion sooner than the SDK would.
            Some((early, _)) if self.step == 1 && early > self.policy.first => early,
            Some((early, late)) if self.elapsed < late => {
                ((late.saturating_sub(early)) / 6).clamp(self.policy.first, self.policy.max)
            }
            // Slower than usual: start the SDK's schedule afresh rather than at its slow end.
            Some(_) => {
                self.overrun += 1;
                self.sdk_step(self.overrun)
            }
            None => self.sdk_step(self.step),
        };
        self.elapsed += wait;
        wait
    }

    /// The official SDK's schedule (protocol §6): 1, 1, 2, 2, 2, 4, 4, 4, 5, 5, … × `first`, capped.
    pub(super) fn sdk_step(&self, step: u32) -> Duration {
        let factor = match step {
            1 | 2 => 1,
            3..=5 => 2,
            _ => 4,
        };
        (self.policy.first * factor).min(self.policy.max)
    }
}
