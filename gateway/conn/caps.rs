//! Caps on the client connections of the public listeners: per address (an IPv6 client
//! by its `limits.ipv6_prefix`) and in total. A connection is counted from its accept,
//! before any TLS handshake, so connects that never send a ClientHello are counted too;
//! one over a cap is closed at once.
//!
//! `limits.max_connections: auto` is taken from the file-descriptor limit: each client
//! connection may hold two descriptors (its own and one to the app), and a reserve is
//! kept for the listeners, the metrics listener, idle app connections, logs and
//! certificates. The gateway raises its soft descriptor limit to the hard one at start,
//! as Go programs and nginx's `worker_rlimit_nofile` do.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::ConnLimits;
use crate::limits::client_bucket;

/// Descriptors kept aside from client connections by `max_connections: auto`.
const FD_RESERVE: u64 = 256;
/// The least `auto` gives, whatever the descriptor limit.
const AUTO_FLOOR: u64 = 16;

/// The caps in force, resolved from the configuration (`auto` made a number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub total: u32,
    pub per_client: Option<u32>,
    pub ipv6_prefix: u8,
}

impl Caps {
    pub fn resolve(limits: &ConnLimits, ipv6_prefix: u8) -> Caps {
        Caps {
            total: limits.max_connections.unwrap_or_else(auto_total),
            per_client: limits.max_connections_per_client,
            ipv6_prefix,
        }
    }
}

/// The cap a refused connection met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    PerClient,
    Total,
}

/// Open client connections, in total and by address; shared by every configuration.
#[derive(Debug, Default)]
pub struct Open {
    total: AtomicU32,
    by_client: Mutex<HashMap<IpAddr, u32>>,
}

/// One admitted connection; dropping it counts the connection out.
pub struct Ticket {
    open: Arc<Open>,
    client: Option<IpAddr>,
}

impl Open {
    /// Counts in a connection from `client`, or refuses it over a cap.
    pub fn enter(self: &Arc<Self>, client: Option<IpAddr>, caps: &Caps) -> Result<Ticket, Full> {
        if self.total.fetch_add(1, Ordering::Relaxed) >= caps.total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Full::Total);
        }
        let mut ticket = Ticket {
            open: self.clone(),
            client: None,
        };
        if let (Some(cap), Some(ip)) = (caps.per_client, client) {
            let key = client_bucket(ip, caps.ipv6_prefix);
            let mut by_client = self.by_client.lock();
            let n = by_client.entry(key).or_insert(0);
            if *n >= cap {
                return Err(Full::PerClient);
            }
            *n += 1;
            ticket.client = Some(key);
        }
        Ok(ticket)
    }

    /// Connections open now (all addresses).
    pub fn total(&self) -> u32 {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.open.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(key) = self.client {
            let mut by_client = self.open.by_client.lock();
            if let Some(n) = by_client.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    by_client.remove(&key);
                }
            }
        }
    }
}

/// Logs the caps in force at start, and warns when one address may take them all.
pub fn announce(caps: &Caps, nofile: Option<u64>) {
    let nofile = nofile.map_or_else(|| "unknown".to_string(), |n| n.to_string());
    let per_client = caps
        .per_client
        .map_or_else(|| "off".to_string(), |n| n.to_string());
    log::info!(
        "event=connection_caps max_connections={} max_connections_per_client={per_client} open_files_limit={nofile}",
        caps.total
    );
    if caps.per_client.is_some_and(|each| each >= caps.total) {
        log::warn!(
            "limits.max_connections_per_client ({per_client}) is not below max_connections ({}): \
             one address can take every connection; raise LimitNOFILE or lower the cap",
            caps.total
        );
    }
}

/// `max_connections: auto`: half of what the descriptor limit leaves after the reserve.
pub fn auto_total() -> u32 {
    let nofile = nofile().unwrap_or(1024);
    let total = (nofile.saturating_sub(FD_RESERVE) / 2).max(AUTO_FLOOR);
    u32::try_from(total).unwrap_or(u32::MAX)
}

/// The soft limit on open descriptors.
pub fn nofile() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` to the pointer given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then_some(limit.rlim_cur)
}

/// Raises the soft descriptor limit to the hard one; returns the soft limit in force.
pub fn raise_nofile() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write one `rlimit` through the pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Some(raised.rlim_cur);
            }
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: u32, per_client: u32) -> Caps {
        Caps {
            total,
            per_client: Some(per_client),
            ipv6_prefix: 64,
        }
    }

    #[test]
    fn an_address_is_held_to_its_cap_and_others_still_get_in() {
        let open = Arc::new(Open::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c = caps(10, 2);
        let first = open.enter(Some(a), &c).unwrap();
        let _second = open.enter(Some(a), &c).unwrap();
        assert_eq!(open.enter(Some(a), &c).err(), Some(Full::PerClient));
        assert!(open.enter(Some(b), &c).is_ok());
        drop(first);
        assert!(open.enter(Some(a), &c).is_ok());
    }

    #[test]
    fn one_ipv6_host_is_its_prefix() {
        let open = Arc::new(Open::default());
        let c = caps(10, 1);
        let _one = open
            .enter(Some("2001:db8::1".parse().unwrap()), &c)
            .unwrap();
        let other = open.enter(Some("2001:db8::2".parse().unwrap()), &c);
        assert_eq!(other.err(), Some(Full::PerClient));
        assert!(open
            .enter(Some("2001:db8:0:1::1".parse().unwrap()), &c)
            .is_ok());
    }

    #[test]
    fn the_total_cap_holds_and_refusals_leave_no_count() {
        let open = Arc::new(Open::default());
        let c = caps(2, 5);
        let tickets: Vec<_> = (1..=2)
            .map(|i| open.enter(Some(IpAddr::from([192, 0, 2, i])), &c).unwrap())
            .collect();
        assert_eq!(
            open.enter(Some("192.0.2.9".parse().unwrap()), &c).err(),
            Some(Full::Total)
        );
        assert_eq!(open.total(), 2);
        drop(tickets);
        assert_eq!(open.total(), 0);
        assert!(open.by_client.lock().is_empty());
    }
}
