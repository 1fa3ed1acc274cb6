//! `api_keys`: the file's problems at its own lines, names and digests once, routes and
//! keys that name each other, a route's `api_keys` and `identity_header`.

use std::path::{Path, PathBuf};

use super::*;

const DIGEST_A: &str = "911022a96074168e038a906ffb3d459d1c645f6dc6bb24b5a443b5d114c3da89";
const DIGEST_B: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A directory of its own with `keys.yaml` holding `keys`.
fn keys_file(test: &str, keys: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gateway-keys-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("keys.yaml"), keys).expect("keys file");
    dir
}

fn routes(dir: &Path, extra: &str) -> String {
    format!(
        "tls: {{ cert: a.pem, key: a.key }}\napi_keys: {{ file: {}/keys.yaml }}\n{extra}routes:\n  - host: a.example.com\n    name: comfy\n    upstream: 7860\n    api_keys: true\n  - host: b.example.com\n    upstream: 7861\n",
        dir.display()
    )
}

fn load(text: &str) -> Result<Config, Vec<String>> {
    parse(Path::new("routes.yaml"), text)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect())
}

#[test]
fn keys_from_the_file_and_from_routes_yaml() {
    let dir = keys_file(
        "ok",
        &format!(
            "# ci\n- {{ name: ci, sha256: {DIGEST_A}, routes: [comfy], expires: 2099-06-30 }}\n"
        ),
    );
    let extra = format!(
        "  keys:\n    - {{ name: nb, sha256: {DIGEST_B}, rate_limit: {{ rate: 2/s, burst: 4 }}, max_concurrent: 2 }}\n"
    );
    let text = routes(&dir, "").replace(
        &format!("api_keys: {{ file: {}/keys.yaml }}\n", dir.display()),
        &format!(
            "api_keys:\n  file: {}/keys.yaml\n  query_param: auth\n{extra}",
            dir.display()
        ),
    );
    let config = load(&text).unwrap_or_else(|e| panic!("{e:?}"));
    let keys = &config.api_keys;
    assert_eq!(keys.query_param, "auth");
    assert_eq!(keys.keys.len(), 2);
    assert_eq!(keys.keys[0].name, "ci");
    assert_eq!(keys.keys[0].sha256[..2], [0x91, 0x10]);
    assert!(keys.keys[0].allows_route("comfy"));
    assert!(!keys.keys[0].allows_route("b.example.com"));
    assert_eq!(keys.keys[1].max_concurrent, Some(2));
    assert_eq!(keys.keys[1].rate_limit.as_ref().map(|r| r.burst), Some(4));
    assert_eq!(config.login_files(), vec![dir.join("keys.yaml")]);
    assert_eq!(config.routes[0].access.api_keys, Some(KeyChoice::Any));
    assert!(!config.routes[0].access.is_public());
}

#[test]
fn the_files_problems_are_reported_at_their_own_lines() {
    let dir = keys_file(
        "bad",
        &format!(
            "- {{ name: ci, sha256: {DIGEST_A} }}\n- {{ name: ci, sha256: {DIGEST_B} }}\n- {{ name: x, sha256: nothex }}\n- {{ name: y, sha256: {DIGEST_A} }}\n- {{ name: z, sha256: {DIGEST_B}, routes: [nowhere], rate_limit: {{ rate: 1/s, key: client_ip }}, max_concurrent: 0, expires: 2027-02-30, colour: red }}\n"
        ),
    );
    let errors = load(&routes(&dir, "")).expect_err("invalid");
    let f = dir.join("keys.yaml").display().to_string();
    let z = "[4].rate_limit.key: a key's rate_limit counts the key's own requests; remove `key`";
    assert_eq!(
        errors[..4],
        [
            format!("{f}:2:5: [1].name: key \"ci\" is given twice (first at {f}:1); give each key its own name"),
            format!("{f}:3:22: [2].sha256: invalid sha256 \"nothex\"; expected the 64 hexadecimal digits `gateway key new` prints (never the key itself)"),
            format!("{f}:4:5: [3].sha256: key \"y\" has the same sha256 as key \"ci\": one secret for two names; make a new key with `gateway key new`"),
            format!("{f}:5:137: {z}"),
        ]
    );
    let all = errors.join("\n");
    for needle in [
        "[4].max_concurrent: invalid max_concurrent 0",
        "[4].expires: invalid expires \"2027-02-30\"",
        "[4].colour: unknown key \"colour\"",
    ] {
        assert!(all.contains(needle), "no {needle:?} in:\n{all}");
    }
    // A route no route is named: a warning in the file (removing a route must not stop
    // revocations), as is a route that accepts no keys.
    let dir = keys_file(
        "route",
        &format!("- {{ name: ci, sha256: {DIGEST_A}, routes: [comfy, nowhere, \"b.*\"] }}\n"),
    );
    let config = load(&routes(&dir, "")).unwrap_or_else(|e| panic!("{e:?}"));
    let f = dir.join("keys.yaml").display().to_string();
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            format!("{f}:1:5: warning: [0].routes[1]: key \"ci\": no route is named \"nowhere\""),
            format!("{f}:1:5: warning: [0].routes[2]: key \"ci\": route \"b.*\" accepts no keys (it has no `api_keys`)"),
        ]
    );
    // Hexadecimal digits only (no sign a number parser would take).
    let plus = format!("+{}", &DIGEST_A[1..]);
    let dir = keys_file("plus", &format!("- {{ name: ci, sha256: \"{plus}\" }}\n"));
    let all = load(&routes(&dir, "")).expect_err("invalid").join("\n");
    assert!(all.contains("[0].sha256: invalid sha256"), "{all}");
}

#[test]
fn a_file_that_is_not_a_list_or_not_yaml() {
    let dir = keys_file("map", "ci: abc\n");
    let all = load(&routes(&dir, "")).expect_err("invalid").join("\n");
    assert!(
        all.contains("keys.yaml:1:1: expected a list of keys"),
        "{all}"
    );
    let dir = keys_file("yaml", "- { name: ci\n");
    let all = load(&routes(&dir, "")).expect_err("invalid").join("\n");
    assert!(all.contains("keys.yaml:"), "{all}");
    let missing = routes(Path::new("/nonexistent-dir"), "");
    let all = load(&missing).expect_err("invalid").join("\n");
    assert!(all.contains("routes.yaml:2:"), "{all}");
    assert!(
        all.contains("cannot read api_keys file /nonexistent-dir/keys.yaml"),
        "{all}"
    );
}

#[test]
fn revoked_and_expired_keys_are_warnings_not_errors() {
    let dir = keys_file(
        "warn",
        &format!("- {{ name: old, sha256: {DIGEST_A}, expires: 2001-01-01 }}\n"),
    );
    let text = routes(&dir, "").replace("api_keys: true", "api_keys: [old, gone]");
    let config = load(&text).unwrap_or_else(|e| panic!("{e:?}"));
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    let all = warnings.join("\n");
    assert!(
        all.contains(
            "warning: [0].expires: key \"old\" expired on 2001-01-01: it is refused (remove it)"
        ),
        "{all}"
    );
    assert!(
        all.contains(
            "routes.yaml:7:15: warning: routes[0].api_keys: no key is named \"gone\" (revoked?)"
        ),
        "{all}"
    );
    // An empty file: no keys at all, and the route says so.
    let dir = keys_file("empty", "# every key revoked\n");
    let config = load(&routes(&dir, "")).unwrap_or_else(|e| panic!("{e:?}"));
    let all: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert!(
        all.join("\n")
            .contains("no key may use route \"comfy\" yet"),
        "{all:?}"
    );
}

#[test]
fn a_route_needs_keys_to_accept_and_a_field_of_its_own_for_identity() {
    let text = "tls: { cert: a.pem, key: a.key }\nroutes:\n  - host: a.example.com\n    upstream: 7860\n    api_keys: yes\n  - host: b.example.com\n    upstream: 7861\n    api_keys: true\n    identity_header: Authorization\n  - host: c.example.com\n    upstream: 7862\n    identity_header: \"bad name\"\n    rate_limit: { rate: 1/s, key: api_key }\n";
    let errors = load(text).expect_err("invalid");
    assert_eq!(
        errors,
        [
            "routes.yaml:5:15: routes[0].api_keys: invalid api_keys \"yes\"; expected true, or a list of key names like [ci-bot, notebook]",
            "routes.yaml:8:15: routes[1].api_keys: no keys to accept: add an `api_keys` section with a `file` (or `keys`)",
            "routes.yaml:9:22: routes[1].identity_header: identity_header authorization is a field the gateway or HTTP gives another meaning; choose the one the app reads, like X-Forwarded-User",
            "routes.yaml:12:22: routes[2].identity_header: invalid identity_header \"bad name\"; expected a header name like X-Forwarded-User",
        ]
    );
    let text = "tls: { cert: a.pem, key: a.key }\nroutes:\n  - host: a.example.com\n    upstream: 7860\n    api_keys: true\n    identity_header: X_Forwarded_For\n  - host: c.example.com\n    upstream: 7862\n    rate_limit: { rate: 1/s, key: api_key }\n";
    let errors = load(text).expect_err("invalid");
    assert_eq!(
        errors,
        [
            "routes.yaml:5:15: routes[0].api_keys: no keys to accept: add an `api_keys` section with a `file` (or `keys`)",
            "routes.yaml:6:22: routes[0].identity_header: identity_header x_forwarded_for is a field the gateway or HTTP gives another meaning; choose the one the app reads, like X-Forwarded-User",
        ]
    );
}

#[test]
fn warnings_for_a_key_named_like_a_user_and_a_rate_keyed_by_the_key_field() {
    let dir = keys_file(
        "alice",
        &format!("- {{ name: alice, sha256: {DIGEST_A} }}\n"),
    );
    let hash = "$2y$05$0123456789012345678901uQ0R7CDSwVmGmZ9y3Hq4p5p3VyG7CxO";
    let text = routes(&dir, "").replace(
        "    api_keys: true\n",
        &format!("    api_keys: true\n    identity_header: X-Forwarded-User\n    basic_auth: {{ users: {{ alice: \"{hash}\" }} }}\n    rate_limit: {{ rate: 1/s, key: \"header:X-API-Key\" }}\n"),
    );
    let config = load(&text).unwrap_or_else(|e| panic!("{e:?}"));
    let all: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    let all = all.join("\n");
    assert!(
        all.contains(
            "routes[0].rate_limit.key: the API key is taken out of x-api-key before the rate limit"
        ),
        "{all}"
    );
    assert!(all.contains("routes[0].identity_header: key \"alice\" and the Basic user \"alice\" would reach the app as the same identity"), "{all}");
}
