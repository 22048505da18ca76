//! What every connection of one emulator shares: its configuration, its id generator and its
//! [`State`] behind one mutex that is never held across an `.await`; with the checks every route
//! makes against them (the key, the fault rules, a model's latency) and the origin its URLs name.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hyper::StatusCode;
use hyper::header::{AUTHORIZATION, HOST, HeaderMap};
use tokio::time::Instant;

use crate::emulator::config::{EmulatorConfig, Fault, FaultEvent};
use crate::emulator::faults::{FaultPlan, splitmix64};
use crate::emulator::ledger::Ledger;
use crate::emulator::request::ApiError;
use crate::emulator::response::{Answer, ConnectionReset, fault_status, oss_error};
use crate::emulator::state::{IdGenerator, State};

/// Everything the server tasks share.
pub(crate) struct Shared {
    pub(crate) config: EmulatorConfig,
    pub(crate) addr: SocketAddr,
    pub(crate) ids: IdGenerator,
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn new(config: EmulatorConfig, addr: SocketAddr) -> Shared {
        let faults = FaultPlan::new(config.faults.clone(), config.fault_seed);
        Shared {
            config,
            addr,
            ids: IdGenerator::new(addr),
            state: Mutex::new(State::new(Instant::now(), faults)),
        }
    }

    /// The state, also after a panic elsewhere: every update leaves it consistent.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn ledger(&self) -> Ledger {
        let mut state = self.state();
        state.settle(Instant::now());
        state.ledger.clone()
    }

    /// Counts one `event` against the fault rules; sleeps through a `delay` (and returns `None`, so
    /// the request goes on), returns any other fault for the caller to enact.
    pub(crate) async fn inject(&self, event: FaultEvent, model: Option<&str>) -> Option<Fault> {
        let fault = {
            let mut state = self.state();
            let fault = state.faults.decide(event, model);
            if fault.is_some() {
                state.ledger.faults_injected += 1;
            }
            fault
        };
        if let Some(Fault::Delay { ms }) = fault {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            return None;
        }
        fault
    }

    /// The latency of `model`'s `ordinal`-th task: its distribution's base plus a jitter drawn from
    /// the seed, or the default latency.
    pub(crate) fn latency_for(&self, model: &str, ordinal: u64) -> Duration {
        let Some(spec) = self.config.latency_per_model.get(model) else {
            return self.config.latency;
        };
        let model_bits = u64::from_le_bytes(
            blake3::hash(model.as_bytes()).as_bytes()[..8]
                .try_into()
                .unwrap_or_default(),
        );
        let draw = splitmix64(self.config.fault_seed ^ splitmix64(model_bits ^ ordinal));
        let jitter = draw % (spec.jitter_ms + 1);
        Duration::from_millis(spec.base_ms + jitter)
    }

    /// A stable, numeric id for the request's key (the service's `api_key_id`), never the key.
    pub(crate) fn api_key_id(headers: &HeaderMap) -> String {
        let key = headers
            .get(AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        let bits = u64::from_le_bytes(
            blake3::hash(&key).as_bytes()[..8]
                .try_into()
                .unwrap_or_default(),
        );
        (bits % 100_000).to_string()
    }

    /// `Authorization: Bearer KEY` with a key this emulator accepts.
    pub(crate) fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidApiKey",
                "No API-key provided.",
            ));
        };
        let key = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        let accepted = !key.is_empty()
            && self
                .config
                .valid_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k == key));
        if accepted {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidApiKey",
                "Invalid API-key provided.",
            ))
        }
    }
}

/// `http://HOST:PORT` for a bound address; an unspecified address is reached through loopback.
pub(crate) fn origin(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// `http://HOST` from the request's `Host` header, so a client that reached the emulator by another
/// name (a container, `0.0.0.0`) can follow the URLs it is given; else from the bound address.
pub(crate) fn public_origin(headers: &HeaderMap, addr: SocketAddr) -> String {
    match headers.get(HOST).and_then(|h| h.to_str().ok()) {
        Some(host) if !host.is_empty() => format!("http://{host}"),
        _ => origin(addr),
    }
}

/// Counts an object-store event against the fault rules. `Err` is the answer to give instead (an
/// injected HTTP error, or a reset); `Ok` passes on any other fault for the caller to enact.
pub(crate) async fn object_store_fault(
    shared: &Shared,
    event: FaultEvent,
    model: &str,
    request_id: &str,
) -> Result<Option<Fault>, Answer> {
    match shared.inject(event, Some(model)).await {
        Some(Fault::Http {
            status,
            code,
            message,
        }) => Err(Ok(oss_error(
            fault_status(status),
            &code,
            &message,
            request_id,
        ))),
        Some(Fault::Reset) => Err(Err(ConnectionReset)),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::config::LatencySpec;

    #[test]
    fn latency_jitter_is_seeded_and_within_its_range() {
        let mut config = EmulatorConfig::default();
        config.latency_per_model.insert(
            "wan2.2-t2i-flash".into(),
            LatencySpec {
                base_ms: 100,
                jitter_ms: 50,
            },
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let latencies = |seed| {
            let shared = Shared::new(
                EmulatorConfig {
                    fault_seed: seed,
                    ..config.clone()
                },
                addr,
            );
            (1..=20)
                .map(|i| shared.latency_for("wan2.2-t2i-flash", i))
                .collect::<Vec<_>>()
        };
        let a = latencies(1);
        assert_eq!(a, latencies(1));
        assert_ne!(a, latencies(2));
        let range = Duration::from_millis(100)..=Duration::from_millis(150);
        assert!(a.iter().all(|l| range.contains(l)), "{a:?}");
        assert!(a.iter().any(|l| *l != a[0]), "{a:?}");
        let shared = Shared::new(config, addr);
        assert_eq!(shared.latency_for("qwen-image", 1), shared.config.latency);
    }
}
