//! Certificates from an ACME server (Let's Encrypt by default) for `tls: acme` routes.
//!
//! The background `AcmeService` keeps, per host, when it next orders: at start, a host
//! without a valid stored certificate is due at once (the default certificate is served
//! meanwhile), one with a certificate is due when a third of its lifetime remains. Each
//! order is for one host (see docs/configuration.md for why). An issued certificate is
//! written to `acme.storage`, where the route's `tls` files point, and the certificate
//! reload that picks up certbot's renewals installs it in the live certificate store: new
//! handshakes get it, open connections keep theirs. A failed order is retried with a
//! doubling wait.
//!
//! Replicas sharing `storage` take its lock file before ordering; challenge answers are
//! written there too, and every replica's plain-HTTP listener serves them (the server's
//! check may reach any replica); the others pick the new certificate up by that same
//! file check.

mod challenges;
mod client;
mod order;
mod schedule;
mod service;
mod storage;

use crate::config::{AcmeSettings, Config};

pub use challenges::Challenges;
pub use service::AcmeService;

/// What the ACME service works on: the settings and the hosts with `tls: acme`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub settings: AcmeSettings,
    /// Each host once, in the order written.
    pub hosts: Vec<String>,
}

impl Plan {
    /// `None` when no route says `tls: acme`.
    pub fn of(config: &Config) -> Option<Plan> {
        let settings = config.acme.clone()?;
        let mut hosts: Vec<String> = Vec::new();
        for route in config.routes.iter().filter(|r| r.acme) {
            let host = route.host.to_string();
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        Some(Plan { settings, hosts })
    }
}
