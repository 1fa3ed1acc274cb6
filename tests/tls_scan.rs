//! Issue 11: testssl.sh (Debian package `testssl.sh`, installed by `make test`) scans the
//! HTTPS listener of the default configuration, with a certificate from a local CA it is
//! told to trust, and must report nothing of severity MEDIUM or worse about protocols,
//! cipher suites, cipher order, server defaults, vulnerabilities or headers. Its own test
//! binary: the scan takes about half a minute and needs the machine to itself less than
//! the others.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{pki, Env, Upstream};
use serde_json::Value;

/// Findings that concern the test certificate only, never the gateway, each with why.
const ABOUT_THE_TEST_CERTIFICATE: &[(&str, &str)] = &[
    (
        "cert_revocation",
        "a test CA publishes no CRL or OCSP responder; a public CA's certificates name them",
    ),
    (
        "OCSP_stapling",
        "nothing to staple without an OCSP responder",
    ),
    (
        "DNS_CAArecord",
        "the test host has no DNS, so no CAA record",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testssl_reports_nothing_medium_or_worse() {
    let app = Upstream::start("app").await;
    let env = Env::new();
    let (ca, chain, key) = pki::ca_and_leaf(&["scan.test"]);
    std::fs::write(env.path("certs/ca.pem"), ca).expect("write CA");
    std::fs::write(env.path("certs/scan.pem"), chain).expect("write chain");
    std::fs::write(env.path("certs/scan.key"), key).expect("write key");
    // The default configuration but for the listeners and the certificate.
    let config = format!(
        "listen:\n  https: \"127.0.0.1:{}\"\n  metrics: \"127.0.0.1:{}\"\n\
         tls:\n  cert: certs/scan.pem\n  key: certs/scan.key\n\
         routes:\n  - host: scan.test\n    upstream: {}\n",
        env.https, env.metrics, app.addr
    );
    let gw = env.start(&config);
    let report = env.path("testssl.json");
    let args = [
        "--quiet",
        "--color",
        "0",
        "--warnings",
        "off",
        "--nodns",
        "none",
        "-p", // protocols
        "-s", // cipher categories
        "-f", // forward secrecy
        "-P", // server cipher order
        "-S", // server defaults: certificate, session resumption, tickets
        "-U", // vulnerabilities
        "-h", // HTTP headers (HSTS, banners)
        "--ip",
        "127.0.0.1",
        "--add-ca",
    ];
    let mut scan = Command::new("testssl")
        .args(args)
        .arg(env.path("certs/ca.pem"))
        .arg("--jsonfile")
        .arg(&report)
        .arg(format!("https://scan.test:{}/", env.https))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("testssl not found: install Debian's `testssl.sh` package (make test does)");
    // A scan takes about 30 s; the bound is for a machine far busier than that.
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = scan.try_wait().expect("testssl status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = scan.kill();
            let _ = scan.wait();
            panic!("testssl did not finish within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let findings: Vec<Value> = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("testssl exited {status}, report unreadable ({e}):\n{text}"));
    let ids: Vec<&str> = findings.iter().filter_map(|f| f["id"].as_str()).collect();
    for expected in [
        "TLS1_3",
        "cipher_order",
        "HSTS",
        "BREACH",
        "TLS_session_ticket",
    ] {
        assert!(
            ids.iter().any(|id| id.starts_with(expected)),
            "the scan did not cover {expected}: {ids:?}"
        );
    }
    let bad: Vec<String> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("MEDIUM" | "HIGH" | "CRITICAL")))
        .filter(|f| {
            let id = f["id"].as_str().unwrap_or_default();
            !ABOUT_THE_TEST_CERTIFICATE
                .iter()
                .any(|(skip, _)| id == *skip)
        })
        .map(|f| format!("{} {}: {}", f["severity"], f["id"], f["finding"]))
        .collect();
    assert!(bad.is_empty(), "testssl findings:\n{}", bad.join("\n"));
    // The certificate itself is trusted through the test CA: the exclusions above are
    // all the scan had to say about it.
    let trust = findings
        .iter()
        .find(|f| f["id"] == "cert_chain_of_trust")
        .map(|f| f["severity"].as_str().unwrap_or_default().to_string());
    assert_eq!(trust.as_deref(), Some("OK"), "{text}");
    assert_eq!(
        gw.errors_logged(),
        Vec::<String>::new(),
        "a scan is not an error"
    );
}
