//! Path routes (`path`, `strip_prefix`): normalised prefixes and their mistakes.

use std::path::Path;

use super::super::*;
use super::{errors, ok};

#[test]
fn path_routes_share_a_host() {
    let config = ok("\
routes:
  - host: ai.example
    path: /voice/
    upstream: 1
    strip_prefix: true
  - host: ai.example
    path: /image
    name: image
    upstream: 2
    tls: { cert: a.pem, key: a.key }
  - host: ai.example
    upstream: 3
    tls: { cert: a.pem, key: a.key }
");
    let shown: Vec<_> = config
        .routes
        .iter()
        .map(|r| (r.name.as_str(), r.path.as_str(), r.strip_prefix))
        .collect();
    assert_eq!(
        shown,
        [
            ("ai.example/voice/", "/voice/", true),
            ("image", "/image/", false),
            ("ai.example", "/", false),
        ]
    );
}

#[test]
fn path_route_mistakes_each_with_its_line() {
    let text = "\
routes:
  - host: ai.example
    path: voice/
    upstream: 1
  - host: ai.example
    path: /image/
    upstream: 2
  - host: ai.example
    path: /image
    upstream: 3
  - host: b.example
    strip_prefix: true
    upstream: 4
  - host: c.example
    path: /a/../b/
    upstream: 5
  - host: c.example
    path: /x%2F/
    strip_prefix: yes please
    upstream: 6
  - host: ai.example
    path: /voice/
    upstream: 7
    tls: { cert: a.pem, key: a.key }
  - host: ai.example
    path: /other/
    upstream: 8
    tls: { cert: b.pem, key: b.key }
";
    assert_eq!(
        errors(text),
        [
            "routes.yaml:3:11: routes[0].path: path \"voice/\" does not start with /; expected a path prefix like /voice/ (letters, digits, -._~ between slashes)",
            "routes.yaml:9:11: routes[2].path: duplicate path \"/image/\" for host \"ai.example\" (first at 6:11); expected each host and path once",
            "routes.yaml:12:19: routes[3].strip_prefix: strip_prefix needs a `path` to strip; expected e.g. path: /voice/",
            "routes.yaml:15:11: routes[4].path: invalid path \"/a/../b/\"; expected a path prefix like /voice/ (letters, digits, -._~ between slashes)",
            "routes.yaml:18:11: routes[5].path: invalid path \"/x%2F/\"; expected a path prefix like /voice/ (letters, digits, -._~ between slashes)",
            "routes.yaml:19:19: routes[5].strip_prefix: expected true or false, found \"yes please\"",
            "routes.yaml:28:12: routes[7].tls: host \"ai.example\" is already served the certificate of routes[6].tls; the routes of one host share one certificate: set `tls` on one of them, or the same files on each",
        ]
    );
}

#[test]
fn path_prefixes_are_normalised_or_refused() {
    let path = |p: &str| {
        let text = format!("routes:\n  - host: a.example\n    path: \"{p}\"\n    upstream: 1\n");
        match parse(Path::new("routes.yaml"), &text) {
            Ok(config) => config.routes[0].path.clone(),
            Err(_) => "refused".to_string(),
        }
    };
    assert_eq!(path("/voice"), "/voice/");
    assert_eq!(path("/voice/"), "/voice/");
    assert_eq!(path("/a/b-c_d.e~f"), "/a/b-c_d.e~f/");
    assert_eq!(path("/"), "/");
    for bad in [
        "//", "//voice/", "/a//b/", "/a b/", "/A%20/", "voice", "/./", "/a/?x",
    ] {
        assert_eq!(path(bad), "refused", "{bad}");
    }
}
