//! The app-server harness (`tests/common/apps.rs`) on its own, without the proxy: each
//! real server starts, answers a raw HTTP/1.1 request with the JSON description of what
//! the app received, and is killed on drop. The request targets are the ones an outside
//! review found read differently by these servers and by the proxy; these tests record
//! each server's reading (run with `--nocapture` to see it) and pin only what the
//! security tests rely on.

mod common;

use common::apps::{App, Server};
use serde_json::Value;

/// Targets that decode or normalise into another route, sent byte for byte.
const TARGETS: &[&str] = &[
    "/admin%2F..%2Fsettings",
    "/admin%2f%2e%2e%2fsettings",
    "/admin\\x",
    "/public\\..\\admin\\x",
];

/// `GET target` to `app`: the JSON it answered, after checking the status and that every
/// field in `fields` is present; the server's reading is printed for the record.
fn ask(app: &App, target: &str, fields: &[&str]) -> Value {
    let (status, json) = app.get(target);
    assert_eq!(status, 200, "{:?} {target}: {json}", app.server);
    for field in fields {
        assert!(
            json.get(field).is_some(),
            "{:?} {target}: no {field} in {json}",
            app.server
        );
    }
    eprintln!("{:?} {target} -> {json}", app.server);
    json
}

const STARLETTE_FIELDS: &[&str] = &[
    "path",
    "raw_path",
    "route",
    "method",
    "headers",
    "http_version",
    "body_len",
];

fn starlette_reports_what_it_received(app: &App) {
    for target in TARGETS {
        let json = ask(app, target, STARLETTE_FIELDS);
        assert_eq!(json["raw_path"], *target, "{:?}", app.server);
        assert_eq!(json["method"], "GET");
        assert_eq!(json["http_version"], "1.1");
        assert_eq!(json["body_len"], 0);
        let host = json["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .any(|h| h[0] == "host" && h[1] == "127.0.0.1");
        assert!(host, "{:?}: the Host header as sent in {json}", app.server);
    }
    assert_eq!(ask(app, "/", STARLETTE_FIELDS)["route"], "public");
}

#[test]
fn uvicorn_reports_each_target_and_upgrades_a_websocket() {
    let app = App::start(Server::Uvicorn);
    starlette_reports_what_it_received(&app);
    let (head, _conn) = app.send_head(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 101"), "uvicorn /ws: {head}");
}

#[test]
fn hypercorn_reports_each_target_and_accepts_an_h2c_upgrade() {
    let app = App::start(Server::Hypercorn);
    starlette_reports_what_it_received(&app);
    // HTTP2-Settings: an empty SETTINGS payload, base64url.
    let (head, _conn) = app.send_head(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: \r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 101"), "hypercorn h2c: {head}");
}

#[test]
fn node_routes_on_the_whatwg_pathname() {
    let app = App::start(Server::Node);
    let fields = ["route", "pathname", "url", "headers", "httpVersion"];
    for target in TARGETS {
        let json = ask(&app, target, &fields);
        assert_eq!(json["url"], *target);
        assert_eq!(json["httpVersion"], "1.1");
        assert_eq!(json["headers"]["host"], "127.0.0.1");
    }
    // WHATWG URL parsing reads `\` as `/` and resolves `..`: an admin route.
    let json = ask(&app, "/public\\..\\admin\\x", &fields);
    assert_eq!(json["route"], "admin", "{json}");
    assert_eq!(json["pathname"], "/admin/x", "{json}");
}
