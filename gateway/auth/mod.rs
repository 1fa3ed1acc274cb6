//! Access control of a route: an address allowlist, password logins (`basic`), an
//! external sign-on service (`forward`), API keys (`crate::keys`), and a count of failed
//! logins per client (`failures`). Built once per configuration from `config` (which has read the htpasswd
//! files too), held by the snapshot; the proxy asks (`proxy/access.rs`).

pub mod basic;
pub mod failures;
pub mod forward;
pub mod hash_password;
pub mod verify;

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::Route;
use crate::keys::RouteKeys;
pub use basic::{Basic, Outcome};
pub use failures::Failures;
pub use forward::{Forward, Verdict};
pub use verify::Verifier;

/// What a restricted route checks, in this order: the client's address, its failed
/// logins, then its credentials (Basic) and the sign-on service (forward auth).
#[derive(Debug)]
pub struct RouteAccess {
    /// `None`: every address.
    pub allow: Option<Vec<IpNet>>,
    pub basic: Option<Basic>,
    pub forward: Option<Forward>,
    /// The API keys the route accepts (`api_keys`); `None`: none.
    pub keys: Option<RouteKeys>,
    /// Keep the client's `Authorization` header on the way to the app.
    pub pass_authorization: bool,
    /// Failed Basic logins and refused keys per client; `None`: not counted.
    pub failures: Option<Arc<Failures>>,
    /// IPv6 clients' logins are bounded by this prefix (`limits.ipv6_prefix`).
    pub ipv6_prefix: u8,
}

impl RouteAccess {
    /// The access control of `route`, or `None` for a public route (which then costs
    /// the request path nothing). `failures` is the counter to keep from the previous
    /// configuration.
    pub fn build(
        route: &Route,
        failures: Option<Arc<Failures>>,
        ipv6_prefix: u8,
        keys: Option<RouteKeys>,
    ) -> Option<RouteAccess> {
        let access = &route.access;
        if access.is_public() {
            return None;
        }
        let basic = access
            .basic_auth
            .as_ref()
            .map(|b| Basic::new(&b.realm, b.users.clone()));
        let counted = basic.is_some() || keys.is_some();
        Some(RouteAccess {
            allow: access.allow.clone(),
            failures: failures.filter(|_| counted),
            basic,
            forward: access.forward_auth.as_ref().map(Forward::build),
            keys,
            pass_authorization: access.pass_authorization,
            ipv6_prefix,
        })
    }

    /// Whether `client` may connect at all.
    pub fn allows(&self, client: IpAddr) -> bool {
        self.allow
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|net| net.contains(&client)))
    }
}
