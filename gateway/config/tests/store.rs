//! `limits_store` and `listen.http_mode`.

use std::time::Duration;

use super::{errors, ok};
use crate::config::{HttpMode, OnStoreError};

fn with(top: &str) -> String {
    format!("listen: {{ http: 8080, https: 8443 }}\n{top}routes:\n  - host: a.example.com\n    upstream: 7860\n")
}

#[test]
fn the_store_block_with_its_defaults() {
    let c = ok(&with(
        "limits_store: { redis: \"redis://10.0.0.5:6379/2\" }\n",
    ));
    let s = c.limits_store.as_ref().expect("store");
    assert_eq!(s.url, "redis://10.0.0.5:6379/2");
    assert_eq!(s.timeout, Duration::from_millis(20));
    assert_eq!(s.on_error, OnStoreError::Local);
    let c = ok(&with(
        "limits_store:\n  redis: unix:///run/redis/redis.sock\n  timeout: 5ms\n  on_error: deny\n",
    ));
    let s = c.limits_store.as_ref().expect("store");
    assert_eq!(
        (s.timeout, s.on_error),
        (Duration::from_millis(5), OnStoreError::Deny)
    );
    assert!(ok(&with("limits_store: off\n")).limits_store.is_none());
    assert!(ok(&with("")).limits_store.is_none());
}

#[test]
fn a_password_in_the_url_is_kept_but_never_shown() {
    let c = ok(&with(
        "limits_store: { redis: \"rediss://app:s3cret@redis.internal:6380/0\" }\n",
    ));
    let s = c.limits_store.as_ref().expect("store");
    assert!(s.url.contains("s3cret"));
    assert_eq!(s.shown, "rediss://***@redis.internal:6380/0");
    assert!(
        !format!("{c:?}").contains("s3cret"),
        "Debug must not show it"
    );
    // Even in an error about the same URL.
    let e = errors(&with(
        "limits_store: { redis: \"http://u:s3cret@host/0\" }\n",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("routes.yaml:2:24: limits_store.redis: invalid Redis URL"),
        "{e:?}"
    );
    assert!(!e[0].contains("s3cret"), "{e:?}");
}

#[test]
fn every_problem_of_the_block_in_one_pass() {
    let e = errors(&with(
        "limits_store:\n  redis: \"\"\n  timeout: 10s\n  on_error: maybe\n  prefix: x\n",
    ));
    let joined = e.join("\n");
    assert_eq!(e.len(), 4, "{joined}");
    assert!(
        joined.contains("routes.yaml:3:10: limits_store.redis: invalid Redis URL"),
        "{joined}"
    );
    assert!(joined.contains("routes.yaml:4:12: limits_store.timeout: invalid timeout \"10s\"; expected from 1ms to 5s"), "{joined}");
    assert!(joined.contains("routes.yaml:5:13: limits_store.on_error: invalid on_error \"maybe\"; expected local, allow or deny"), "{joined}");
    assert!(joined.contains("prefix"), "{joined}");
    let e = errors(&with("limits_store: { timeout: 20ms }\n"));
    assert!(e[0].contains("limits_store: missing `redis`"), "{e:?}");
}

#[test]
fn http_mode_proxy_needs_the_http_listener() {
    let c = ok(&with("")).listen;
    assert_eq!(c.http_mode, HttpMode::Redirect);
    let text = "listen: { http: 8080, https: 8443, http_mode: proxy }\nroutes:\n  - host: a.example.com\n    upstream: 7860\n";
    assert_eq!(ok(text).listen.http_mode, HttpMode::Proxy);
    let e = errors("listen: { https: 8443, http_mode: proxy }\nroutes:\n  - host: a.example.com\n    upstream: 7860\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("listen.http_mode: `proxy` needs a plain-HTTP listener"),
        "{e:?}"
    );
    let e = errors("listen: { http: 80, http_mode: tunnel }\nroutes:\n  - host: a.example.com\n    upstream: 7860\n");
    assert!(
        e[0].contains("invalid http_mode \"tunnel\"; expected redirect"),
        "{e:?}"
    );
}
