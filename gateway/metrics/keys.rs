//! `gateway_api_key_requests_total{key, route, code}` (issue 30): the requests each
//! verified API key made on each route. The labels come from the key list and the
//! routes, never from traffic; a key's series on a route are created on its first
//! request there, so recording one is an atomic add after a first label lookup.

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec};

use super::Register;

/// Status codes 100..=599 get a slot each.
const CODES: usize = 500;

pub(super) fn family(register: &Register) -> Result<IntCounterVec, prometheus::Error> {
    register.counters(
        "gateway_api_key_requests_total",
        "Requests made with a verified API key, by key, route and status code.",
        &["key", "route", "code"],
    )
}

/// One key's counters on a route, by status.
type ByCode = Box<[OnceLock<IntCounter>]>;

/// One route's counts, by key (the index of the key in the configuration's key list).
pub struct KeyCounts {
    family: IntCounterVec,
    route: String,
    /// Per key: its counters by status, allocated on its first request.
    by_key: Box<[OnceLock<ByCode>]>,
}

impl std::fmt::Debug for KeyCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCounts")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl KeyCounts {
    pub(super) fn new(family: IntCounterVec, route: &str, keys: usize) -> KeyCounts {
        KeyCounts {
            family,
            route: route.to_string(),
            by_key: (0..keys).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts one request of key `name` (at `index` in the key list) answered `status`.
    pub fn request(&self, index: usize, name: &str, status: u16) {
        let label = || status.to_string();
        let Some(codes) = self.by_key.get(index) else {
            return;
        };
        let codes = codes.get_or_init(|| (0..CODES).map(|_| OnceLock::new()).collect());
        match usize::from(status)
            .checked_sub(100)
            .and_then(|c| codes.get(c))
        {
            Some(slot) => slot
                .get_or_init(|| {
                    self.family
                        .with_label_values(&[name, &self.route, &label()])
                })
                .inc(),
            None => self
                .family
                .with_label_values(&[name, &self.route, &label()])
                .inc(),
        }
    }
}
