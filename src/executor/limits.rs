//! Model limits: a `Pacer` spacing events (submissions per model, queries overall) and a
//! `ModelLimit` holding a model's tasks in flight, cut on throttling and given back on success.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Spaces events at least `spacing` apart (submissions per model, task queries overall).
pub(super) struct Pacer {
    pub(super) spacing: Duration,
    pub(super) next: Mutex<Instant>,
}

impl Pacer {
    /// Paces at a hair under `per_second`: a service counting in a sliding one-second window sees
    /// network jitter, and an event exactly on the window's edge would be throttled.
    pub(super) fn new(per_second: u32) -> Pacer {
        Pacer {
            spacing: Duration::from_secs(1) / per_second.max(1) * 103 / 100
                + Duration::from_millis(2),
            next: Mutex::new(Instant::now()),
        }
    }

    pub(super) async fn wait(&self) {
        let wait = {
            let mut next = self
                .next
                .lock()
                .expect("the pacing lock is never poisoned: no panics while held");
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + self.spacing;
            at - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Per-model quota: tasks in flight and submission spacing. Throttling cuts the tasks in flight by
/// one (down to one); each later success gives one back (additive recovery).
pub(super) struct ModelLimit {
    pub(super) in_flight: Arc<Semaphore>,
    pub(super) pacer: Pacer,
    /// Held shared by each submission until its task id is known, and exclusively while an
    /// ambiguous submission looks for its task in the service's list: no other submission of the
    /// model can then be in the air, unknown, and mistaken for it.
    pub(super) submitting: tokio::sync::RwLock<()>,
    pub(super) quota: u32,
    pub(super) cut: AtomicU32,
}

impl ModelLimit {
    /// Withdraws one permit, once one is free, unless only one would be left.
    pub(super) fn cut_once(&self) {
        let cut = self.cut.load(Ordering::SeqCst);
        if cut + 1 >= self.quota
            || self
                .cut
                .compare_exchange(cut, cut + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return;
        }
        let semaphore = Arc::clone(&self.in_flight);
        tokio::spawn(async move {
            if let Ok(permit) = semaphore.acquire().await {
                permit.forget();
            }
        });
    }

    pub(super) fn recover_once(&self) {
        let cut = self.cut.load(Ordering::SeqCst);
        if cut > 0
            && self
                .cut
                .compare_exchange(cut, cut - 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.in_flight.add_permits(1);
        }
    }
}

/// Task queries per second across the whole build (DashScope's documented limit is 20).
pub(super) const QUERIES_PER_SECOND: u32 = 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(quota: u32) -> ModelLimit {
        ModelLimit {
            in_flight: Arc::new(Semaphore::new(quota as usize)),
            pacer: Pacer::new(2),
            submitting: tokio::sync::RwLock::new(()),
            quota,
            cut: AtomicU32::new(0),
        }
    }

    #[test]
    fn a_pacer_spaces_events_a_hair_wider_than_the_rate() {
        assert_eq!(Pacer::new(20).spacing, Duration::from_micros(53_500));
        assert_eq!(Pacer::new(2).spacing, Duration::from_millis(517));
        // A rate of zero is one a second, never a division by zero.
        assert_eq!(Pacer::new(0).spacing, Pacer::new(1).spacing);
    }

    #[test]
    fn throttling_cuts_tasks_in_flight_down_to_one_and_successes_give_them_back() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime for the test");
        runtime.block_on(async {
            let limit = limit(3);
            let settle = || async {
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                }
            };
            limit.cut_once();
            settle().await;
            assert_eq!(limit.in_flight.available_permits(), 2);
            limit.cut_once();
            limit.cut_once();
            settle().await;
            assert_eq!(limit.in_flight.available_permits(), 1, "never below one");
            assert_eq!(limit.cut.load(Ordering::SeqCst), 2);
            limit.recover_once();
            assert_eq!(limit.in_flight.available_permits(), 2);
            limit.recover_once();
            limit.recover_once();
            assert_eq!(
                limit.in_flight.available_permits(),
                3,
                "never above the quota"
            );
            assert_eq!(limit.cut.load(Ordering::SeqCst), 0);
        });
    }
}
