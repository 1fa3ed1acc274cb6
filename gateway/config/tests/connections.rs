//! `limits.send_timeout`, `limits.max_connections`, `limits.max_connections_per_client`.

use std::time::Duration;

use super::{errors, ok};
use crate::config::ConnLimits;

const ROUTE: &str = "routes:\n  - { host: a.example, upstream: 1 }\n";

#[test]
fn defaults_and_values() {
    let d = ok(ROUTE).conn_limits;
    assert_eq!(d, ConnLimits::default());
    assert_eq!(d.send_timeout, Duration::from_secs(60));
    assert_eq!(d.max_connections, None);
    assert_eq!(d.max_connections_per_client, Some(256));
    let c = ok(&format!(
        "limits:\n  send_timeout: 2m\n  max_connections: 5000\n  max_connections_per_client: off\n{ROUTE}"
    ))
    .conn_limits;
    assert_eq!(c.send_timeout, Duration::from_secs(120));
    assert_eq!(c.max_connections, Some(5000));
    assert_eq!(c.max_connections_per_client, None);
    let auto = ok(&format!("limits:\n  max_connections: auto\n{ROUTE}"));
    assert_eq!(auto.conn_limits.max_connections, None);
}

#[test]
fn bad_values_are_reported_with_their_place() {
    assert_eq!(
        errors(&format!(
            "limits:\n  send_timeout: off\n  max_connections: 0\n  max_connections_per_client: many\n{ROUTE}"
        )),
        [
            "routes.yaml:2:17: limits.send_timeout: invalid send_timeout \"off\"; expected from 1s to 1h (it cannot be off)",
            "routes.yaml:3:20: limits.max_connections: invalid max_connections 0; expected a number of connections from 1 to 10000000 or auto",
            "routes.yaml:4:31: limits.max_connections_per_client: invalid max_connections_per_client \"many\"; expected a number of connections from 1 to 10000000 or off",
        ]
    );
}

#[test]
fn a_per_client_cap_not_below_the_total_is_a_warning() {
    let c = ok(&format!(
        "limits:\n  max_connections: 100\n  max_connections_per_client: 100\n{ROUTE}"
    ));
    let warnings: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        ["dir/routes.yaml:3:31: warning: limits.max_connections_per_client: max_connections_per_client (100) is not below max_connections (100): one address can take every connection"]
    );
}
