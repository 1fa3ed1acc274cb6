//! The metrics listener (`listen.metrics`, keep it on loopback): `GET /metrics` in the
//! Prometheus text format, `GET /healthz` (200 while serving), `POST /-/reload` (200
//! with a summary, 400 with the `FILE:LINE:COL: message` lines of `gateway check`),
//! `GET /-/apps` (the managed apps, JSON) and `POST /-/apps/NAME/start|stop`.
//! Never on the public listeners.
//!
//! A browser on the operator's machine can reach loopback too: a page of another site
//! could post a reload, or, once its own name resolves to 127.0.0.1 (DNS rebinding),
//! read the metrics. So the listener answers only a `Host` that is an IP literal,
//! `localhost` or a name in `listen.metrics_hosts`, and refuses a request that comes
//! from another site's page (an `Origin` other than the listener's own, or
//! `Sec-Fetch-Site: cross-site`) with 403. Prometheus and `gateway reload` send neither.

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;

use crate::config;
use crate::metrics::Metrics;
use crate::redirect::plain;
use crate::reload::Reloader;
use crate::router::strip_port;
use crate::state::Shared;

pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub reloader: Arc<Reloader>,
    /// For `listen.metrics_hosts`, which a reload may change.
    pub shared: Arc<Shared>,
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if let Err(why) = same_site(req, &self.shared.snapshot.load().metrics_hosts) {
            return plain(StatusCode::FORBIDDEN, format!("{why}\n").into());
        }
        if let Some(action) = req.uri.path().strip_prefix("/-/apps/") {
            if req.method != Method::POST {
                return plain(StatusCode::METHOD_NOT_ALLOWED, b"Use POST.\n".to_vec());
            }
            let (name, start) = match action.rsplit_once('/') {
                Some((name, "start")) => (name, true),
                Some((name, "stop")) => (name, false),
                _ => {
                    let hint = b"Use POST /-/apps/NAME/start or /-/apps/NAME/stop.\n";
                    return plain(StatusCode::NOT_FOUND, hint.to_vec());
                }
            };
            return match self.shared.apps.operate(name, start).await {
                Ok(text) => plain(StatusCode::OK, format!("{text}\n").into()),
                Err(text) => plain(StatusCode::NOT_FOUND, format!("{text}\n").into()),
            };
        }
        if req.uri.path() == "/-/reload" {
            if req.method != Method::POST {
                return plain(StatusCode::METHOD_NOT_ALLOWED, b"Use POST.\n".to_vec());
            }
            let reloader = self.reloader.clone();
            return match tokio::task::spawn_blocking(move || reloader.reload()).await {
                Ok(Ok(summary)) => plain(StatusCode::OK, format!("reloaded: {summary}\n").into()),
                Ok(Err(errors)) => plain(StatusCode::BAD_REQUEST, config::render(&errors).into()),
                Err(_) => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    b"reload failed\n".to_vec(),
                ),
            };
        }
        if req.method != Method::GET && req.method != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, b"Use GET.\n".to_vec());
        }
        match req.uri.path() {
            "/metrics" => {
                let mut resp = plain(StatusCode::OK, self.metrics.encode());
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            "/healthz" => plain(StatusCode::OK, b"ok\n".to_vec()),
            "/-/apps" => {
                let mut resp = plain(StatusCode::OK, self.shared.apps.report().to_string().into());
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                resp
            }
            _ => plain(
                StatusCode::NOT_FOUND,
                b"Not found: try /metrics or /healthz.\n".to_vec(),
            ),
        }
    }
}

/// Whether `req` names this listener by a `Host` it answers (an IP literal, `localhost`,
/// or one of `hosts`) and does not come from another site's page.
fn same_site(req: &RequestHeader, hosts: &[String]) -> Result<(), &'static str> {
    let Some(host) = req.headers.get(header::HOST).map(|h| h.as_bytes()) else {
        return Err("A Host field is required.");
    };
    let name = strip_port(host);
    let name = name.strip_suffix(b".").unwrap_or(name);
    let literal = std::str::from_utf8(name).is_ok_and(|n| {
        n.parse::<std::net::Ipv4Addr>().is_ok()
            || n.strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok())
    });
    let listed = name.eq_ignore_ascii_case(b"localhost")
        || hosts
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h.as_bytes()));
    if !literal && !listed {
        return Err(
            "This Host is not one the metrics listener answers (see listen.metrics_hosts).",
        );
    }
    if let Some(origin) = req.headers.get(header::ORIGIN) {
        let origin = origin.as_bytes();
        let own = origin
            .windows(3)
            .position(|w| w == b"://")
            .is_some_and(|at| origin[at + 3..].eq_ignore_ascii_case(host));
        if !own {
            return Err("Requests from another site's page are refused.");
        }
    }
    let cross_site = req
        .headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    if cross_site {
        return Err("Requests from another site's page are refused.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(fields: &[(&'static str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/-/reload", None).expect("request");
        for (name, value) in fields {
            r.append_header(*name, *value).expect("field");
        }
        r
    }

    #[test]
    fn only_this_machine_s_names_and_its_own_pages() {
        let hosts = vec!["gw.internal".to_string()];
        let ok = |fields: &[(&'static str, &str)]| same_site(&req(fields), &hosts).is_ok();
        assert!(ok(&[("host", "127.0.0.1:9100")]));
        assert!(ok(&[("host", "[::1]:9100")]));
        assert!(ok(&[("host", "localhost:9100")]));
        assert!(ok(&[("host", "GW.internal:9100")]));
        assert!(ok(&[
            ("host", "127.0.0.1:9100"),
            ("origin", "http://127.0.0.1:9100")
        ]));
        assert!(ok(&[("host", "10.1.2.3")]));
        assert!(!ok(&[]));
        assert!(!ok(&[("host", "attacker.example:9100")]));
        assert!(!ok(&[("host", "localhost.attacker.example")]));
        assert!(!ok(&[
            ("host", "127.0.0.1:9100"),
            ("origin", "http://attacker.example")
        ]));
        assert!(!ok(&[("host", "127.0.0.1:9100"), ("origin", "null")]));
        assert!(!ok(&[
            ("host", "127.0.0.1:9100"),
            ("sec-fetch-site", "cross-site")
        ]));
    }
}
