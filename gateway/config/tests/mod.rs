//! Config diagnostics: exact text, with line and column.

use std::path::Path;
use std::time::Duration;

use super::*;

mod acme;
mod apps;
mod connections;
mod keys;
mod paths;
mod pools;
mod store;

pub(super) fn errors(text: &str) -> Vec<String> {
    match parse(Path::new("routes.yaml"), text) {
        Ok(_) => vec![],
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

pub(super) fn ok(text: &str) -> Config {
    parse(Path::new("dir/routes.yaml"), text).unwrap_or_else(|e| panic!("{}", render(&e)))
}

const GOOD: &str = "\
listen:
  http: 8080
  https: \"127.0.0.1:8443\"
defaults:
  max_body: 500M
  read_timeout: 10m
  headers:
    X-Frame-Options: DENY
routes:
  - host: Voice.Example.com.
    upstream: 127.0.0.1:7860
    max_body: 2G
  - host: \"*.apps.example.com\"
    name: apps
    upstream: 7861
    read_timeout: off
    headers: { X-Frame-Options: null, X-Extra: \"1\" }
    tls: { cert: certs/a.pem, key: certs/a.key }
";

#[test]
fn parses_a_full_config_with_inheritance() {
    let c = ok(GOOD);
    assert_eq!(c.listen.http.unwrap().to_string(), "0.0.0.0:8080");
    assert_eq!(c.listen.https.to_string(), "127.0.0.1:8443");
    assert_eq!(c.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
    let voice = &c.routes[0];
    assert_eq!(voice.host, HostPattern::Exact("voice.example.com".into()));
    assert_eq!(voice.name, "voice.example.com");
    assert_eq!(voice.max_body, Some(2 << 30));
    assert_eq!(voice.read_timeout, Some(Duration::from_secs(600)));
    assert_eq!(voice.connect_timeout, Some(DEFAULT_CONNECT_TIMEOUT));
    assert_eq!(voice.headers.len(), 1);
    assert_eq!(voice.headers[0].1, "DENY");
    let apps = &c.routes[1];
    assert_eq!(apps.host, HostPattern::Wildcard("apps.example.com".into()));
    assert_eq!(apps.name, "apps");
    assert_eq!(apps.upstreams, ["127.0.0.1:7861".parse().unwrap()]);
    assert_eq!(apps.max_body, Some(500 << 20));
    assert_eq!(apps.read_timeout, None);
    assert_eq!(apps.headers.len(), 1);
    assert_eq!(apps.headers[0].0, "x-extra");
    let tls = apps.tls.as_ref().unwrap();
    assert_eq!(tls.cert, Path::new("dir/certs/a.pem"));
    assert_eq!(tls.pos.unwrap().to_string(), "18:18");
}

#[test]
fn built_in_defaults() {
    let c = ok("routes:\n  - host: a.example\n    upstream: 1\n");
    assert_eq!(c.listen.https.to_string(), DEFAULT_HTTPS);
    assert!(c.listen.http.is_none() && c.listen.metrics.is_none());
    assert!(c.tls.default_cert.is_none());
    assert_eq!(c.routes[0].max_body, Some(DEFAULT_MAX_BODY));
    assert_eq!(c.routes[0].headers.len(), 3);
    assert_eq!(c.headers.len(), 3);
}

#[test]
fn an_empty_file_is_an_error_and_so_is_one_of_comments() {
    for text in ["", "# routes: to come\n\n", "---\n"] {
        let problems = errors(text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "routes.yaml: the file is empty (or only comments); expected at least `routes:`"
            ),
            "{problems:?}"
        );
    }
    // `routes: []` says what it means: no app yet.
    assert!(ok("routes: []\n").routes.is_empty());
}

#[test]
fn routes_written_as_a_mapping_get_the_list_form() {
    let problems = errors("routes:\n  voice:\n    host: a.test\n    upstream: 1\n");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("routes.yaml:2:3: routes: invalid type: map, expected a sequence: write each route as an item of a list: `- host: voice.example.com` under `routes:`"),
        "{problems:?}"
    );
}

#[test]
fn an_unquoted_zero_turns_a_timeout_off() {
    let c = ok("defaults:\n  read_timeout: 0\nroutes:\n  - host: a.test\n    upstream: 1\n    write_timeout: 0\n");
    assert_eq!(c.routes[0].read_timeout, None);
    assert_eq!(c.routes[0].write_timeout, None);
    // A bare number other than 0 still needs its unit.
    let problems = errors("defaults:\n  read_timeout: 30\n");
    assert!(
        problems[0].contains("invalid duration 30; expected a duration with a unit"),
        "{problems:?}"
    );
}

#[test]
fn unknown_key_suggests_the_nearest() {
    assert_eq!(
        errors("routes:\n  - host: a.example\n    upstrem: 127.0.0.1:1\n"),
        [
            "routes.yaml:2:5: routes[0]: missing `upstream`; expected e.g. upstream: 127.0.0.1:7860",
            "routes.yaml:3:5: routes[0]: unknown field `upstrem`, expected one of `host`, `path`, `strip_prefix`, `name`, \
          `upstream`, `upstream_host`, `balance`, `health`, `sticky`, `max_concurrent`, `queue`, `max_body`, `connect_timeout`, `read_timeout`, `write_timeout`, `headers`, \
          `tls`, `rate_limit`, `allow`, `basic_auth`, `forward_auth`, `pass_authorization`, `auth_failures`, `app`, `api_keys`, `identity_header`, `compress`; did you mean `upstream`?"
        ]
    );
}

#[test]
fn syntax_error_has_a_position() {
    let e = errors("listen:\n  https: [\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("routes.yaml:3:1: "), "{e:?}");
}

#[test]
fn collects_every_bad_value_with_its_line() {
    let text = "\
listen:
  https: \"0.0.0.0:99999\"
shutdown_timeout: 30
defaults:
  max_body: 12Q
routes:
  - host: a.example
    upstream: 127.0.0.1:1
    read_timeout: soon
  - host: \"a.example\"
    upstream: nowhere
  - host: \"bad host\"
    upstream: 1
  - upstream: 2
";
    assert_eq!(
        errors(text),
        [
            "routes.yaml:2:10: listen.https: invalid address \"0.0.0.0:99999\"; expected IP:PORT (e.g. 0.0.0.0:8443) or a port",
            "routes.yaml:3:19: shutdown_timeout: invalid duration 30; expected a duration with a unit (e.g. 500ms, 30s, 5m, 1h) or \"off\"",
            "routes.yaml:5:13: defaults.max_body: invalid size \"12Q\"; expected bytes or a whole number with K, M, G or T (e.g. 500M), or \"off\"",
            "routes.yaml:9:19: routes[0].read_timeout: invalid duration \"soon\"; expected a duration with a unit (e.g. 500ms, 30s, 5m, 1h) or \"off\"",
            "routes.yaml:10:11: routes[1].host: duplicate host \"a.example\" (first at 7:11); expected each host once",
            "routes.yaml:11:15: routes[1].upstream: invalid upstream \"nowhere\"; expected HOST:PORT (e.g. 127.0.0.1:7860)",
            "routes.yaml:12:11: routes[2].host: invalid host \"bad host\"; expected a host name like voice.example.com or *.example.com, without port",
            "routes.yaml:14:5: routes[3]: missing `host`; expected e.g. host: voice.example.com",
        ]
    );
}

#[test]
fn body_deadline_underscores_ipv6_prefix_and_metrics_hosts() {
    let c = ok(
        "listen: { https: 8443, metrics: 9100, metrics_hosts: [GW.internal] }
limits:
  underscores_in_headers: true
  body_timeout: 20s
  body_min_rate: 8K
  ipv6_prefix: 48
routes:
  - { host: a.example, upstream: 1 }
",
    );
    assert_eq!(c.listen.metrics_hosts, ["gw.internal"]);
    assert!(c.head_limits.underscores_in_headers);
    assert_eq!(c.body_deadline.timeout, Duration::from_secs(20));
    assert_eq!(c.body_deadline.min_rate, Some(8192));
    assert_eq!(c.ipv6_prefix, 48);
    let d = ok("routes:\n  - { host: a.example, upstream: 1 }\n");
    assert!(!d.head_limits.underscores_in_headers);
    assert_eq!(d.body_deadline, BodyDeadline::default());
    assert_eq!(d.ipv6_prefix, 64);
    assert_eq!(
        ok("limits: { body_min_rate: off }\nroutes:\n  - { host: a.example, upstream: 1 }\n")
            .body_deadline
            .min_rate,
        None
    );
    assert_eq!(
        errors(
            "listen: { https: 8443, metrics_hosts: [\"a b\"] }
limits:
  underscores_in_headers: yes
  body_timeout: 0s
  body_min_rate: fast
  ipv6_prefix: 8
routes:
  - { host: a.example, upstream: 1 }
"
        ),
        [
            "routes.yaml:1:39: listen.metrics_hosts: invalid host name \"a b\"; expected a list of host names like [gateway.internal]",
            "routes.yaml:3:27: limits.underscores_in_headers: expected true or false, found \"yes\"",
            "routes.yaml:4:17: limits.body_timeout: invalid body_timeout \"0s\"; expected from 1s to 1h (it cannot be off)",
            "routes.yaml:5:18: limits.body_min_rate: invalid body_min_rate \"fast\"; expected bytes per second like 500 or 8K, or off",
            "routes.yaml:6:16: limits.ipv6_prefix: invalid ipv6_prefix 8; expected a prefix length from 16 to 128 (64: a host's /64)",
        ]
    );
}

#[test]
fn duplicate_hosts_and_names() {
    let text = "\
routes:
  - host: a.example
    upstream: 1
  - host: A.example
    upstream: 2
  - host: b.example
    name: a.example
    upstream: 3
";
    assert_eq!(
        errors(text),
        [
            "routes.yaml:4:11: routes[1].host: duplicate host \"a.example\" (first at 2:11); expected each host once",
            "routes.yaml:7:11: routes[2].name: duplicate route name \"a.example\" (first at 2:11); names label metrics and must be unique",
        ]
    );
}

#[test]
fn tls_pairs_and_versions() {
    let text = "\
tls:
  cert: a.pem
  min_version: 1.1
routes:
  - host: a.example
    upstream: 1
    tls: { key: k.pem }
";
    assert_eq!(
        errors(text),
        [
            "routes.yaml:2:3: tls: a certificate needs its key: add `key`",
            "routes.yaml:3:16: tls.min_version: invalid TLS version 1.1; expected \"1.2\" or \"1.3\"",
            "routes.yaml:7:12: routes[0].tls: a key needs its certificate: add `cert`",
        ]
    );
    assert_eq!(
        ok("tls:\n  min_version: \"1.3\"\n").tls.min_version,
        TlsVersion::V1_3
    );
}

#[test]
fn bad_headers() {
    let text = "\
defaults:
  headers:
    \"Bad Name\": x
    X-Ok: [1]
";
    assert_eq!(
        errors(text),
        [
            "routes.yaml:3:17: defaults.headers.Bad Name: invalid header name \"Bad Name\"",
            "routes.yaml:4:11: defaults.headers.X-Ok: expected a header value or null, found a list",
        ]
    );
}

#[test]
fn listener_ports_must_differ() {
    assert_eq!(
        errors("listen:\n  http: 8443\n  https: 8443\n"),
        ["routes.yaml:2:9: listen.http: port 8443 is also listen.https; expected distinct ports"]
    );
}

#[test]
fn unknown_keys_are_reported_with_every_other_problem_in_one_pass() {
    let text = "\
routes:
  - host: a.example
    upstream: 1
    upstrem: 2
    rate_limit: { rate: fast }
  - host: a.example
    upstream: 3
    max_bdy: 1G
listn: {}
";
    assert_eq!(
        errors(text),
        [
            "routes.yaml:4:5: routes[0]: unknown field `upstrem`, expected one of `host`, `path`, `strip_prefix`, `name`, \
             `upstream`, `upstream_host`, `balance`, `health`, `sticky`, `max_concurrent`, `queue`, `max_body`, `connect_timeout`, `read_timeout`, `write_timeout`, \
             `headers`, `tls`, `rate_limit`, `allow`, `basic_auth`, `forward_auth`, `pass_authorization`, `auth_failures`, `app`, `api_keys`, `identity_header`, `compress`; did you mean `upstream`?",
            "routes.yaml:5:25: routes[0].rate_limit.rate: invalid rate \"fast\"; expected requests per second, minute or hour like 20/s, 60/m or 1000/h",
            "routes.yaml:6:11: routes[1].host: duplicate host \"a.example\" (first at 2:11); expected each host once",
            "routes.yaml:8:5: routes[1]: unknown field `max_bdy`, expected one of `host`, `path`, `strip_prefix`, `name`, \
             `upstream`, `upstream_host`, `balance`, `health`, `sticky`, `max_concurrent`, `queue`, `max_body`, `connect_timeout`, `read_timeout`, `write_timeout`, \
             `headers`, `tls`, `rate_limit`, `allow`, `basic_auth`, `forward_auth`, `pass_authorization`, `auth_failures`, `app`, `api_keys`, `identity_header`, `compress`; did you mean `max_body`?",
            "routes.yaml:9:1: unknown field `listn`, expected one of `listen`, `tls`, `defaults`, `limits`, \
             `routes`, `shutdown_timeout`, `threads`, `acme_webroot`, `acme`, `limits_store`, `trusted_proxies`, \
             `access_log`, `upgrade_grace`, `upgrade_sock`, `state_dir`, `apps`, `groups`, `gpus`, `api_keys`; did you mean `listen`?",
        ]
    );
}

#[test]
fn misshapen_sections_are_reported_and_the_rest_still_checked() {
    let text = "\
listen: [8443]
tls: { cert: a.pem, key: k.pem, extra: 1 }
routes:
  - voice.example
  -
  - host: b.example
    upstream: nowhere
    headers: 5
    tls: yes
";
    assert_eq!(
        errors(text),
        [
            "routes.yaml:1:9: listen: invalid type: sequence, expected a mapping of listeners like { http: 80, https: 443 }",
            "routes.yaml:2:33: tls: unknown field `extra`, expected one of `cert`, `key`, `min_version`",
            "routes.yaml:4:5: routes[0]: invalid type: string \"voice.example\", expected a route mapping like { host: voice.example.com, upstream: 127.0.0.1:7860 }",
            "routes.yaml:5:3: routes[1]: empty route; expected e.g. host: voice.example.com and upstream: 127.0.0.1:7860",
            "routes.yaml:7:15: routes[2].upstream: invalid upstream \"nowhere\"; expected HOST:PORT (e.g. 127.0.0.1:7860)",
            "routes.yaml:8:14: routes[2].headers: invalid type: integer `5`, expected a YAML mapping",
            "routes.yaml:9:10: routes[2].tls: invalid tls \"yes\"; expected `acme` or a mapping like { cert: FILE, key: FILE }",
        ]
    );
    assert_eq!(
        errors("- a\n- b\n"),
        ["routes.yaml:1:1: invalid type: sequence, expected a mapping of settings like listen:, tls:, defaults: and routes:"]
    );
}

#[test]
fn keys_that_are_not_names_are_reported_and_the_rest_still_checked() {
    let text = "routes:\n  - host: a.example\n    upstream: 1\n    1: x\n  - host: b.example\n    upstream: nowhere\n";
    assert_eq!(
        errors(text),
        [
            "routes.yaml:2:5: routes[0]: invalid type: integer `1` as a key; expected key names",
            "routes.yaml:6:15: routes[1].upstream: invalid upstream \"nowhere\"; expected HOST:PORT (e.g. 127.0.0.1:7860)",
        ]
    );
}

#[test]
fn a_file_of_nothing_but_mistakes_stops_at_a_bound() {
    let text: String = (0..150).map(|i| format!("unknown{i}: 1\n")).collect();
    let e = errors(&text);
    assert_eq!(e.len(), 101, "{e:?}");
    assert!(e[0].starts_with("routes.yaml: too many problems"), "{e:?}");
    assert!(
        e[1].starts_with("routes.yaml:1:1: unknown field `unknown0`"),
        "{e:?}"
    );
}

/// Operator input never reaches a panic: the bundled routes.yaml, mutated at random
/// (bytes flipped, dropped, repeated; YAML's special characters inserted), always parses
/// to a configuration or to diagnostics.
#[test]
fn mutated_configurations_never_panic() {
    let original = include_str!("../../../routes.yaml").as_bytes();
    const SPECIAL: &[&[u8]] = &[
        b":",
        b"-",
        b" ",
        b"\n",
        b"\t",
        b"{",
        b"}",
        b"[",
        b"]",
        b"&a",
        b"*a",
        b"!!binary ",
        b"'",
        b"\"",
        b"#",
        b"|",
        b">",
        b"?",
        b"~",
        b"\xff",
        b"0x",
        b"1e400",
        b"<<: *a",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n.max(1) as u64) as usize
    };
    for _ in 0..3000 {
        let mut text = original.to_vec();
        for _ in 0..1 + next(4) {
            let at = next(text.len() + 1);
            match next(4) {
                0 if at < text.len() => text[at] = next(256) as u8,
                1 => drop(text.drain(at..(at + next(20)).min(text.len()))),
                2 => {
                    let copy = text[at..(at + next(60)).min(text.len())].to_vec();
                    text.splice(at..at, copy);
                }
                _ => {
                    let insert = SPECIAL[next(SPECIAL.len())];
                    text.splice(at..at, insert.iter().copied());
                }
            }
        }
        let _ = parse(Path::new("routes.yaml"), &String::from_utf8_lossy(&text));
    }
}

#[test]
fn upstream_host_is_a_host_with_an_optional_port() {
    for good in ["localhost:11434", "127.0.0.1", "[::1]:8080", "app.internal"] {
        let c = ok(&format!(
            "routes:\n  - host: a.test\n    upstream: 1\n    upstream_host: \"{good}\"\n"
        ));
        assert_eq!(
            c.routes[0].upstream_host.as_ref().map(|h| h.to_str().ok()),
            Some(Some(good))
        );
    }
    assert_eq!(
        ok("routes:\n  - host: a.test\n    upstream: 1\n").routes[0].upstream_host,
        None
    );
    for bad in [
        "\"http://localhost\"",
        "\"user@localhost\"",
        "\"\"",
        "\"a b\"",
        "\"localhost/x\"",
        "[a]",
    ] {
        let problems = errors(&format!(
            "routes:\n  - host: a.test\n    upstream: 1\n    upstream_host: {bad}\n"
        ));
        assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
        assert!(
            problems[0]
                .starts_with("routes.yaml:4:20: routes[0].upstream_host: invalid upstream_host"),
            "{bad}: {problems:?}"
        );
    }
}
