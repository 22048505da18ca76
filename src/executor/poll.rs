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
        let mut sorted: Vec<f64> = history
            .iter()
            .copied()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .collect();
        // Three usable latencies at least: fewer say nothing of the model (and none would have
        // no percentile at all).
        let window = (sorted.len() >= 3).then(|| {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn waits(schedule: &mut PollSchedule, count: usize) -> Vec<f64> {
        (0..count)
            .map(|_| schedule.next_wait().as_secs_f64())
            .collect()
    }

    #[test]
    fn without_history_the_schedule_is_the_sdks_capped_at_max() {
        let mut schedule = PollSchedule::new(PollPolicy::REAL, &[]);
        assert_eq!(
            waits(&mut schedule, 9),
            [1.0, 1.0, 2.0, 2.0, 2.0, 4.0, 4.0, 4.0, 4.0]
        );
        let policy = PollPolicy {
            first: Duration::from_secs(2),
            max: Duration::from_secs(5),
        };
        let mut schedule = PollSchedule::new(policy, &[]);
        assert_eq!(waits(&mut schedule, 7), [2.0, 2.0, 4.0, 4.0, 4.0, 5.0, 5.0]);
    }

    #[test]
    fn fewer_than_three_usable_latencies_are_no_history() {
        for history in [&[10.0, 10.0][..], &[f64::NAN, -1.0, f64::INFINITY, 10.0]] {
            let mut schedule = PollSchedule::new(PollPolicy::REAL, history);
            assert_eq!(waits(&mut schedule, 3), [1.0, 1.0, 2.0], "{history:?}");
        }
    }

    #[test]
    fn with_history_it_sleeps_through_the_early_part_then_polls_inside_the_window() {
        // 10th percentile 10 s (slept 90 % of it), 90th percentile 21 s: a query every 2 s inside
        // the window (its sixth, within the policy), then the SDK's schedule afresh.
        let history = [10.0, 12.0, 15.0, 21.0, 21.0];
        let mut schedule = PollSchedule::new(PollPolicy::REAL, &history);
        assert_eq!(
            waits(&mut schedule, 12),
            [9.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 2.0]
        );
    }

    #[test]
    fn a_model_faster_than_the_first_wait_is_polled_at_the_first_wait() {
        let history = [0.2, 0.3, 0.4];
        let mut schedule = PollSchedule::new(PollPolicy::REAL, &history);
        // Early (0.18 s) is below `first`: no long first sleep; past 0.4 s it is the SDK's schedule.
        assert_eq!(waits(&mut schedule, 3), [1.0, 1.0, 1.0]);
    }
}
