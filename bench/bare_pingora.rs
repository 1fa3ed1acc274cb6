//! A bare Pingora proxy, the floor the benchmark (`bench/race.sh`) measures the gateway
//! against: the framework with no feature of ours. It matches the `Host` (or HTTP/2
//! `:authority`) against a table, adds `X-Forwarded-For` and `X-Forwarded-Proto`, and
//! proxies over Pingora's pooled keep-alive connections, with Pingora's own TLS
//! listener (intermediate profile, a certificate from files, ALPN h2) and its defaults
//! everywhere else. Not part of the product; built with
//! `cargo build --release --example bare-pingora`.
//!
//!   bare-pingora --threads N --https ADDR --http ADDR --cert PEM --key PEM [--l4-read BYTES] HOST=UPSTREAM...
//!
//! `--l4-read` (not used by the race) sets the HTTPS listener's L4 read buffer, to measure
//! what Pingora's 64 KiB default costs (docs/performance.md, memory per connection).

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Bare {
    routes: Vec<(String, String)>,
    https: bool,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, session: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host())
            .unwrap_or("");
        let host = host.split(':').next().unwrap_or("");
        match self.routes.iter().find(|(h, _)| h == host) {
            Some((_, upstream)) => Ok(Box::new(HttpPeer::new(
                upstream.as_str(),
                false,
                String::new(),
            ))),
            None => Err(Error::explain(HTTPStatus(404), "no route")),
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        _: &mut (),
    ) -> Result<()> {
        if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
            upstream.insert_header("x-forwarded-for", addr.ip().to_string())?;
        }
        let proto = if self.https { "https" } else { "http" };
        upstream.insert_header("x-forwarded-proto", proto)
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut threads, mut https, mut http, mut cert, mut key) = (2, None, None, None, None);
    let mut l4_read = None;
    let mut routes = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--threads" => threads = args.next().and_then(|n| n.parse().ok()).unwrap_or(2),
            "--https" => https = args.next(),
            "--http" => http = args.next(),
            "--cert" => cert = args.next(),
            "--key" => key = args.next(),
            "--l4-read" => l4_read = args.next().and_then(|n| n.parse().ok()),
            route => match route.split_once('=') {
                Some((host, upstream)) => routes.push((host.to_string(), upstream.to_string())),
                None => {
                    eprintln!("usage: bare-pingora --threads N --https ADDR --http ADDR --cert PEM --key PEM HOST=UPSTREAM...");
                    std::process::exit(2);
                }
            },
        }
    }
    let conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    if let (Some(addr), Some(cert), Some(key)) = (https, cert, key) {
        let app = Bare {
            routes: routes.clone(),
            https: true,
        };
        let mut service = http_proxy_service(&server.configuration, app);
        let mut tls = match TlsSettings::intermediate(&cert, &key) {
            Ok(tls) => tls,
            Err(e) => {
                eprintln!("bare-pingora: {e}");
                std::process::exit(1);
            }
        };
        tls.enable_h2();
        service.add_listener(
            ListenerConfig::tcp(addr)
                .tls(tls)
                .l4_buffer(L4BufferSettings {
                    read: l4_read,
                    write: None,
                }),
        );
        server.add_service(service);
    }
    if let Some(addr) = http {
        let app = Bare {
            routes,
            https: false,
        };
        let mut service = http_proxy_service(&server.configuration, app);
        service.add_tcp(&addr);
        server.add_service(service);
    }
    server.run_forever();
}
