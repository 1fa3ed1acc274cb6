//! The exposed-upstream check. An app behind the gateway must listen on loopback only:
//! one that listens on every interface (Gradio's `server_name="0.0.0.0"`, a Docker
//! `-p 7860:7860`) can be reached around the gateway, without its TLS, limits, logins
//! or logs. For each route whose upstream is a loopback address, the check tries a TCP
//! connection to the same port on each of this host's own non-loopback addresses; one
//! that is accepted means the app is exposed. Nothing but a TCP connect to this host's
//! own addresses is sent, and the connection is closed at once.
//!
//! Run by `gateway check`, and by the running gateway at start, after every reload and
//! every `EVERY` (see `background::ExposureWatch`). A firewall that drops outside traffic
//! to the port is not seen from inside: the warning says so.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// How often the running gateway checks again.
pub const EVERY: Duration = Duration::from_secs(300);

/// A connect to one of this host's own addresses is answered at once; the bound is for a
/// host whose firewall silently drops even local traffic.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A route's app, found answering on a non-loopback address of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    pub route: String,
    pub upstream: SocketAddr,
    /// Where it answered (this host's address, the upstream's port).
    pub reachable: SocketAddr,
}

impl Exposed {
    /// The warning for the log and `gateway check`: what, where, and how to fix it.
    pub fn warning(&self) -> String {
        format!(
            "route {}: its app ({}) also accepts connections on {}, so clients can reach it \
             without the gateway (no TLS, limits or logins), unless a firewall blocks port {} \
             from outside. Make the app listen on 127.0.0.1 only: Gradio \
             launch(server_name=\"127.0.0.1\"), Streamlit --server.address 127.0.0.1, \
             uvicorn/Flask --host 127.0.0.1, Docker -p 127.0.0.1:{}:{}",
            self.route,
            self.upstream,
            self.reachable,
            self.upstream.port(),
            self.upstream.port(),
            self.upstream.port(),
        )
    }
}

/// This host's own addresses other than loopback: IPv4, and IPv6 other than link-local
/// (which needs an interface to connect to).
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut addresses: Vec<IpAddr> = interfaces
        .filter_map(|i| i.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !is_link_local_v6(ip))
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

fn is_link_local_v6(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// The routes (name, upstream) whose loopback upstream also answers on one of
/// `addresses`. Blocking: a few local connects per loopback upstream port.
pub fn check(routes: &[(String, SocketAddr)], addresses: &[IpAddr]) -> Vec<Exposed> {
    // Routes sharing an upstream port are checked once.
    let mut answered: HashMap<u16, Option<SocketAddr>> = HashMap::new();
    let mut exposed = Vec::new();
    for (route, upstream) in routes.iter().filter(|(_, up)| up.ip().is_loopback()) {
        let port = upstream.port();
        let reachable = *answered.entry(port).or_insert_with(|| {
            addresses
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .find(|addr| TcpStream::connect_timeout(addr, CONNECT_TIMEOUT).is_ok())
        });
        if let Some(reachable) = reachable {
            exposed.push(Exposed {
                route: route.clone(),
                upstream: *upstream,
                reachable,
            });
        }
    }
    exposed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    #[test]
    fn an_app_on_every_interface_is_found_and_one_on_loopback_is_not() {
        let Some(ip) = local_addresses().into_iter().find(IpAddr::is_ipv4) else {
            panic!("this host has no non-loopback IPv4 address to check against");
        };
        let everywhere = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        let loopback = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = |l: &TcpListener| l.local_addr().expect("addr").port();
        let on = |p: u16| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p);
        let routes = vec![
            ("open".to_string(), on(port(&everywhere))),
            ("closed".to_string(), on(port(&loopback))),
            ("remote".to_string(), SocketAddr::new(ip, port(&everywhere))),
        ];
        let found = check(&routes, &[ip]);
        assert_eq!(
            found,
            [Exposed {
                route: "open".to_string(),
                upstream: on(port(&everywhere)),
                reachable: SocketAddr::new(ip, port(&everywhere)),
            }]
        );
        assert!(found[0].warning().contains("server_name=\"127.0.0.1\""));
    }
}
