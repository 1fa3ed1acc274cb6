//! `acme` and `tls: acme`.

use std::path::Path;
use std::time::Duration;

use super::{errors, ok};

const ACME: &str = "\
listen: { http: 8080, https: 8443 }
state_dir: state
acme:
  email: ops@example.com
  directory: https://127.0.0.1:14000/dir
routes:
  - host: voice.example.com
    upstream: 7860
    tls: acme
  - host: voice.example.com
    path: /api/
    upstream: 7861
  - host: plain.example.com
    upstream: 7862
";

#[test]
fn tls_acme_points_the_route_at_its_stored_files() {
    let c = ok(ACME);
    let acme = c.acme.as_ref().expect("acme settings");
    assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
    assert_eq!(acme.storage, Path::new("dir/state/acme"));
    assert_eq!(acme.dir, Path::new("dir/state/acme/127.0.0.1_14000"));
    assert_eq!(acme.first_retry, Duration::from_secs(60));
    assert_eq!(acme.max_retry, Duration::from_secs(4 * 3600));
    let voice = &c.routes[0];
    assert!(voice.acme);
    let files = voice.tls.as_ref().expect("files");
    assert_eq!(
        files.cert,
        Path::new("dir/state/acme/127.0.0.1_14000/voice.example.com/cert.pem")
    );
    assert!(!c.routes[1].acme && c.routes[1].tls.is_none());
}

#[test]
fn without_the_block_the_defaults_apply_and_without_either_there_is_none() {
    let c = ok("listen: { http: 80 }\nroutes:\n  - host: a.example.com\n    upstream: 7860\n    tls: acme\n");
    let acme = c.acme.expect("defaults");
    assert_eq!(acme.directory, crate::config::LETS_ENCRYPT);
    assert_eq!(acme.email, None);
    assert!(acme.dir.ends_with("acme-v02.api.letsencrypt.org"));
    // A block without `tls: acme` routes: a replica that only answers the challenges
    // of others sharing its storage.
    let c =
        ok("acme: { directory: staging }\nroutes:\n  - host: a.example.com\n    upstream: 7860\n");
    let acme = c.acme.expect("the block");
    assert!(acme.dir.ends_with("acme-staging-v02.api.letsencrypt.org"));
    assert!(ok("routes:\n  - host: a.example.com\n    upstream: 7860\n")
        .acme
        .is_none());
}

#[test]
fn a_host_has_acme_or_files_not_both() {
    let text = "\
listen: { http: 8080 }
routes:
  - host: a.example.com
    upstream: 7860
    tls: acme
  - host: a.example.com
    path: /x/
    upstream: 7861
    tls: { cert: a.pem, key: a.key }
";
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "routes.yaml:9:12: routes[1].tls: host \"a.example.com\" is already served"
        ),
        "{e:?}"
    );
}

#[test]
fn retry_waits_must_be_ordered() {
    let text = "listen: { http: 8080 }\nacme: { first_retry: 5h, max_retry: 1h }\nroutes:\n  - host: a.example.com\n    upstream: 7860\n    tls: acme\n";
    assert_eq!(
        errors(text),
        ["routes.yaml:2:22: acme.first_retry: expected a wait above 0 and not above `max_retry`"]
    );
}

#[test]
fn the_block_must_be_a_mapping() {
    let text = "listen: { http: 8080 }\nacme: off\nroutes:\n  - host: a.example.com\n    upstream: 7860\n    tls: acme\n";
    assert_eq!(
        errors(text),
        ["routes.yaml:2:7: acme: expected a mapping like { email: ops@example.com, directory: staging }, found \"off\""]
    );
}

/// What the gateway writes goes to the state directory, which must be a directory it can
/// write: the error is at `state_dir` when the file sets it, else at what needs it.
#[test]
fn the_state_directory_must_be_writable_where_it_is_used() {
    let file = std::env::temp_dir().join(format!("gateway-state-file-{}", std::process::id()));
    std::fs::write(&file, "").expect("write");
    let shown = file.display().to_string();
    let at_state_dir =
        format!("state_dir: {shown}\nroutes:\n  - host: a.example.com\n    upstream: 7860\n");
    let e = errors(&at_state_dir);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(&format!("routes.yaml:1:12: state_dir: {shown} is not a directory; the gateway writes the self-signed certificate (`tls` names none) there (the state directory, from state_dir)")),
        "{e:?}"
    );
    // With a certificate of its own and no ACME, nothing is written there.
    let certified = format!("state_dir: {shown}\ntls: {{ cert: a.pem, key: a.key }}\nroutes:\n  - host: a.example.com\n    upstream: 7860\n");
    assert_eq!(errors(&certified), Vec::<String>::new());
    let acme = format!("state_dir: {shown}\ntls: {{ cert: a.pem, key: a.key }}\nlisten: {{ http: 80 }}\nroutes:\n  - host: a.example.com\n    upstream: 7860\n    tls: acme\n");
    let e = errors(&acme);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("state_dir: ") && e[0].contains("the ACME account and certificates"),
        "{e:?}"
    );
    let log = format!("tls: {{ cert: a.pem, key: a.key }}\naccess_log: {}\nroutes:\n  - host: a.example.com\n    upstream: 7860\n", std::env::temp_dir().display());
    let e = errors(&log);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("routes.yaml:2:13: access_log: ") && e[0].contains("is a directory"),
        "{e:?}"
    );
    let _ = std::fs::remove_file(file);
}
