//! Deciding which request gets which injected fault: per-rule occurrence counters for the `nth`
//! schedules, and a splitmix64 draw keyed by (seed, rule, occurrence) for the rates, so the pattern
//! depends only on the seed and on each rule's own sequence of events, not on how other requests
//! interleave.

use crate::emulator::config::{Fault, FaultEvent, FaultRule};

/// The splitmix64 output function (Steele, Lea and Flood, 2014): a well-mixed 64-bit value of `x`.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform value in `[0, 1)` from 64 random bits.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The fault rules and how often each has seen its event.
#[derive(Debug, Default)]
pub(crate) struct FaultPlan {
    rules: Vec<FaultRule>,
    seed: u64,
    seen: Vec<u64>,
}

impl FaultPlan {
    pub(crate) fn new(rules: Vec<FaultRule>, seed: u64) -> FaultPlan {
        FaultPlan {
            seen: vec![0; rules.len()],
            rules,
            seed,
        }
    }

    /// Forgets every occurrence seen, as at start.
    pub(crate) fn reset(&mut self) {
        self.seen.iter_mut().for_each(|n| *n = 0);
    }

    /// Counts one `event` (for `model`, when known) against every rule that watches it, and returns
    /// the fault of the first rule that fires, if any.
    pub(crate) fn decide(&mut self, event: FaultEvent, model: Option<&str>) -> Option<Fault> {
        let mut fired = None;
        for (index, rule) in self.rules.iter().enumerate() {
            let watches = rule.on == event
                && rule
                    .model
                    .as_deref()
                    .is_none_or(|wanted| model == Some(wanted));
            if !watches {
                continue;
            }
            self.seen[index] += 1;
            let occurrence = self.seen[index];
            if fired.is_some() {
                continue;
            }
            let scheduled = rule
                .nth
                .as_ref()
                .is_some_and(|nth| nth.contains(&occurrence));
            let drawn = rule.rate.is_some_and(|rate| {
                let key = self.seed
                    ^ splitmix64(index as u64 ^ 0xFA17)
                    ^ splitmix64(occurrence.rotate_left(32));
                unit(splitmix64(key)) < rate
            });
            let always = rule.nth.is_none() && rule.rate.is_none();
            if scheduled || drawn || always {
                fired = Some(rule.fault.clone());
            }
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        on: FaultEvent,
        model: Option<&str>,
        nth: Option<Vec<u64>>,
        rate: Option<f64>,
    ) -> FaultRule {
        FaultRule {
            on,
            model: model.map(str::to_owned),
            nth,
            rate,
            fault: Fault::Reset,
        }
    }

    #[test]
    fn nth_counts_each_rules_own_events() {
        let mut plan = FaultPlan::new(
            vec![rule(FaultEvent::Submit, Some("a"), Some(vec![2]), None)],
            0,
        );
        let fired: Vec<bool> = [Some("a"), Some("b"), Some("a"), Some("a")]
            .into_iter()
            .map(|m| plan.decide(FaultEvent::Submit, m).is_some())
            .collect();
        assert_eq!(fired, [false, false, true, false]);
        assert!(plan.decide(FaultEvent::Query, Some("a")).is_none());
        plan.reset();
        assert!(plan.decide(FaultEvent::Submit, Some("a")).is_none());
        assert!(plan.decide(FaultEvent::Submit, Some("a")).is_some());
    }

    #[test]
    fn a_rate_is_deterministic_per_seed_and_near_its_value() {
        let pattern = |seed| {
            let mut plan =
                FaultPlan::new(vec![rule(FaultEvent::Query, None, None, Some(0.25))], seed);
            (0..4000)
                .map(|_| plan.decide(FaultEvent::Query, None).is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(pattern(7), pattern(7));
        assert_ne!(pattern(7), pattern(8));
        let hits = pattern(7).iter().filter(|h| **h).count();
        assert!((850..1150).contains(&hits), "{hits} of 4000 at rate 0.25");
    }

    #[test]
    fn the_first_rule_that_fires_wins_and_later_rules_still_count() {
        let mut plan = FaultPlan::new(
            vec![
                rule(FaultEvent::Download, None, Some(vec![1]), None),
                FaultRule {
                    fault: Fault::Truncate,
                    ..rule(FaultEvent::Download, None, Some(vec![2]), None)
                },
            ],
            0,
        );
        assert_eq!(plan.decide(FaultEvent::Download, None), Some(Fault::Reset));
        assert_eq!(
            plan.decide(FaultEvent::Download, None),
            Some(Fault::Truncate)
        );
        assert_eq!(plan.decide(FaultEvent::Download, None), None);
    }
}
