//! Issue 15 against the real binary and a real ACME server on loopback (Debian's
//! `pebble`, with its test DNS answering every name with 127.0.0.1): certificates are
//! issued through the gateway's own plain-HTTP listener and served by SNI; a restart
//! reuses the account and certificates; short-lived certificates are renewed live; an
//! unreachable server is retried with backoff while the old certificate is served; failed
//! challenges are retried; `gateway check` reports a bad `acme` block.

mod common;

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::pebble::{Pebble, PebbleOptions};
use common::{sample, Env, Upstream};
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode};
use openssl::x509::X509;

/// Pebble refuses this share of nonces (its own default is 5 %): instant-acme must retry.
const NONCE_REJECT: u8 = 5;

fn pebble(env: &Env, validity_secs: u64) -> Pebble {
    Pebble::start(
        env.dir.path(),
        PebbleOptions {
            http_port: env.http,
            validity_secs,
            reject_nonces: NONCE_REJECT,
            ..PebbleOptions::default()
        },
    )
}

/// The standard listeners, an `acme` block for `pebble`, and one `tls: acme` route per host.
fn config(env: &Env, pebble: &Pebble, up: &Upstream, hosts: &[&str]) -> String {
    config_at(env, pebble, up, hosts, &[], "acme/")
}

/// The same with routes without `tls` for `plain` hosts, and `storage` in another place.
fn config_at(
    env: &Env,
    pebble: &Pebble,
    up: &Upstream,
    hosts: &[&str],
    plain: &[&str],
    storage: &str,
) -> String {
    let route = |h: &&str| format!("  - host: {h}\n    upstream: {}\n", up.addr);
    let routes: String = hosts
        .iter()
        .map(|h| format!("{}    tls: acme\n", route(h)))
        .chain(plain.iter().map(route))
        .collect();
    format!(
        "{}acme:\n  email: ops@example.com\n  directory: {}\n  storage: {storage}\n  ca_bundle: {}\n  first_retry: 1s\n  max_retry: 30s\nroutes:\n{routes}",
        env.listen_and_tls(),
        pebble.directory(),
        pebble.ca_bundle().display()
    )
}

/// A TLS connection to the gateway for `host`. With `root`, the chain must verify up to it
/// and name `host` (a real client's check); without, anything is accepted.
fn connect(env: &Env, host: &str, root: Option<&[u8]>) -> Result<SslStream<TcpStream>, String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    match root {
        Some(pem) => {
            let store = b.cert_store_mut();
            for cert in X509::stack_from_pem(pem).map_err(|e| e.to_string())? {
                store.add_cert(cert).map_err(|e| e.to_string())?;
            }
        }
        None => b.set_verify(SslVerifyMode::NONE),
    }
    let tcp = TcpStream::connect(("127.0.0.1", env.https)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    b.build()
        .connect(host, tcp)
        .map_err(|e| format!("handshake for {host}: {e}"))
}

/// The serial of the certificate the gateway serves for `host` (unverified).
fn served_serial(env: &Env, host: &str) -> String {
    let s = connect(env, host, None).expect("handshake");
    let cert = s.ssl().peer_certificate().expect("a certificate");
    let serial = cert.serial_number().to_bn().expect("serial");
    serial.to_hex_str().expect("hex").to_string()
}

/// One HTTP/1.1 keep-alive exchange on an open connection: the status line.
fn get(s: &mut SslStream<TcpStream>, host: &str) -> String {
    use std::io::{Read, Write};
    let req = format!("GET /echo HTTP/1.1\r\nHost: {host}\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut buf = vec![0u8; 64 << 10];
    let mut got = Vec::new();
    // The echo answer is small and has a Content-Length: read until it is all here.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "connection closed");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= len {
                return head.lines().next().unwrap_or_default().to_string();
            }
        }
    }
    panic!("no complete answer: {}", String::from_utf8_lossy(&got));
}

/// Polls `/metrics` until `ready` holds, for up to `limit`; panics with `what` and the
/// ACME series otherwise.
async fn until(env: &Env, what: &str, limit: Duration, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (_, text) = env.metrics_get("/metrics").await;
        if ready(&text) {
            return text;
        }
        let acme: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("gateway_acme"))
            .collect();
        assert!(Instant::now() < deadline, "{what}:\n{}", acme.join("\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn orders(text: &str, result: &str) -> f64 {
    sample(
        text,
        &format!("gateway_acme_orders_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_are_issued_through_the_gateway_and_a_restart_reuses_them() {
    let env = Env::new();
    let pebble = pebble(&env, 7_776_000);
    let up = Upstream::start("app").await;
    let hosts = ["voice.test", "chat.test"];
    let gw = env.start(&config(&env, &pebble, &up, &hosts));
    // Serving at once, with the default certificate until the orders complete.
    for host in hosts {
        let mut s = connect(&env, host, None).expect("a certificate from the start");
        assert!(get(&mut s, host).contains(" 200"), "{host}");
    }

    let text = until(&env, "both issued", Duration::from_secs(60), |t| {
        orders(t, "issued") >= 2.0
    })
    .await;
    // Logged before the first order, so certainly written by now.
    assert!(
        gw.log_text().contains("event=acme_pending host=voice.test"),
        "{}",
        gw.log_text()
    );
    // One certificate per host; any other order was a failed one, retried (Pebble's
    // validation can fail on a loaded machine).
    assert_eq!(orders(&text, "issued"), 2.0, "{}", gw.log_text());
    let failed = orders(&text, "failed");
    assert_eq!(pebble.orders() as f64, 2.0 + failed, "{}", gw.log_text());
    let root = pebble.issuing_root();
    let mut serials = Vec::new();
    for host in hosts {
        // Chains to Pebble's root and names the host; the default certificate would not.
        let mut s = connect(&env, host, Some(&root)).expect("Pebble's certificate");
        assert!(get(&mut s, host).contains(" 200"), "{host}");
        serials.push(served_serial(&env, host));
        let renewal = sample(
            &text,
            &format!("gateway_acme_next_renewal_timestamp_seconds{{host=\"{host}\"}}"),
        )
        .expect("next renewal series");
        let in_days = (renewal
            - std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()))
            / 86_400.0;
        // 90 days: renewed with 30 (to 33, jitter) left.
        assert!(
            (56.0..=60.5).contains(&in_days),
            "{host}: renewal in {in_days} days"
        );
        let line = format!("event=acme_order host={host} result=issued");
        assert!(gw.log_text().contains(&line), "{}", gw.log_text());
    }
    assert_ne!(serials[0], serials[1], "one certificate per host");
    // Private storage: directories 0700, files 0600.
    // acme/<directory host_port>/: the only directory in storage.
    let dir = std::fs::read_dir(env.path("acme"))
        .expect("storage")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("the directory's own storage");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("account.json")), 0o600);
    assert_eq!(mode(&dir.join("voice.test/key.pem")), 0o600);

    // A restart: same account, same certificates, no new order.
    let orders_before = pebble.orders();
    drop(gw);
    let path = env.path("routes.yaml");
    let mut gw = env.spawn(&path, &[], "gateway2.log");
    gw.wait_ready();
    for (host, serial) in hosts.iter().zip(&serials) {
        connect(&env, host, Some(&root)).expect("the stored certificate");
        assert_eq!(&served_serial(&env, host), serial, "{host}");
    }
    let text = until(&env, "scheduled", Duration::from_secs(20), |t| {
        t.contains("gateway_acme_next_renewal_timestamp_seconds{host=\"chat.test\"}")
    })
    .await;
    assert_eq!(orders(&text, "issued") + orders(&text, "failed"), 0.0);
    assert_eq!(pebble.orders(), orders_before, "no new order");
    let log = gw.log_text();
    assert!(!log.contains("acme_account_created"), "{log}");
    assert!(
        log.contains("event=acme_certificate host=voice.test"),
        "{log}"
    );

    // A reload adding a host: ordered in the background, served without a restart; the
    // others are not ordered again.
    let three = ["voice.test", "chat.test", "new.test"];
    env.write_config(&config(&env, &pebble, &up, &three));
    gw.signal(libc::SIGHUP);
    let text = until(
        &env,
        "issued after the reload",
        Duration::from_secs(60),
        |t| orders(t, "issued") >= 1.0,
    )
    .await;
    until_served(&env, "new.test", &root).await;
    let failed = orders(&text, "failed") as usize;
    assert_eq!(orders(&text, "issued"), 1.0, "only the new host");
    assert_eq!(
        pebble.orders(),
        orders_before + 1 + failed,
        "only the new host"
    );
    assert_eq!(served_serial(&env, "voice.test"), serials[0]);
    assert!(gw.errors_logged().is_empty(), "{:?}", gw.errors_logged());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_replaces_the_certificate_live_and_survives_a_stopped_server() {
    let env = Env::new();
    // 15-second certificates: renewed 10 s after issue (a third left), up to 0.5 s earlier.
    let mut pebble = pebble(&env, 15);
    let up = Upstream::start("app").await;
    let host = "voice.test";
    let gw = env.start(&config(&env, &pebble, &up, &[host]));
    until(&env, "issued", Duration::from_secs(60), |t| {
        orders(t, "issued") >= 1.0
    })
    .await;
    let first = served_serial(&env, host);
    // An open connection, kept across everything that follows.
    let mut open = connect(&env, host, None).expect("connection");
    assert!(get(&mut open, host).contains(" 200"));
    let expiry = format!("gateway_tls_certificate_expiry_timestamp_seconds{{host=\"{host}\"}}");
    let first_expiry = sample(&env.metrics_get("/metrics").await.1, &expiry).expect("expiry");

    // The renewal: new handshakes get the new certificate, the open connection goes on,
    // the expiry metric follows.
    let text = until(&env, "renewed", Duration::from_secs(60), |t| {
        orders(t, "issued") >= 2.0
    })
    .await;
    // Stopped at once: the next renewal is 10 s away.
    pebble.stop();
    let second = served_serial(&env, host);
    assert_ne!(second, first, "the renewed certificate is served");
    assert!(
        get(&mut open, host).contains(" 200"),
        "the open connection is undisturbed"
    );
    let second_expiry = sample(&text, &expiry).expect("expiry");
    assert!(
        second_expiry > first_expiry,
        "{first_expiry} then {second_expiry}"
    );

    // The server is gone: the next renewal fails and is retried with a growing wait,
    // while the current certificate is still served.
    let text = until(
        &env,
        "three failed renewals",
        Duration::from_secs(60),
        |t| orders(t, "failed") >= 3.0,
    )
    .await;
    assert_eq!(orders(&text, "issued"), 2.0);
    assert_eq!(
        served_serial(&env, host),
        second,
        "the current certificate is served"
    );
    let log = gw.log_text();
    // The failures since the last issued certificate.
    let outage = log.rsplit("result=issued").next().unwrap_or_default();
    let waits: Vec<u64> = outage
        .lines()
        .filter(|l| l.contains("result=failed"))
        .filter_map(|l| {
            l.split("retry_in_s=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(waits.len() >= 3, "{log}");
    assert_eq!(&waits[..3], &[1, 2, 4], "doubling from first_retry: {log}");

    // Back (with a new root, and without the account: registered again), the next retry
    // renews.
    pebble.restart();
    until(&env, "renewed again", Duration::from_secs(60), |t| {
        orders(t, "issued") >= 3.0
    })
    .await;
    let root = pebble.issuing_root();
    connect(&env, host, Some(&root)).expect("the renewed certificate chains to the new root");
    assert_ne!(served_serial(&env, host), second);
    assert!(
        get(&mut open, host).contains(" 200"),
        "the open connection is undisturbed"
    );
    assert!(
        gw.log_text().contains("event=acme_account_gone"),
        "{}",
        gw.log_text()
    );
    assert!(gw.errors_logged().is_empty(), "{:?}", gw.errors_logged());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_challenge_is_retried() {
    let env = Env::new();
    let pebble = pebble(&env, 7_776_000);
    // Pebble validates at 127.0.0.2, where nothing listens: the challenge fails.
    pebble.dns_a("voice.test", "127.0.0.2");
    let up = Upstream::start("app").await;
    let gw = env.start(&config(&env, &pebble, &up, &["voice.test"]));
    until(&env, "two failed orders", Duration::from_secs(60), |t| {
        orders(t, "failed") >= 2.0
    })
    .await;
    let log = gw.log_text();
    assert!(
        log.contains("event=acme_order host=voice.test result=failed"),
        "{log}"
    );
    pebble.dns_clear("voice.test");
    until(&env, "issued", Duration::from_secs(60), |t| {
        orders(t, "issued") >= 1.0
    })
    .await;
    connect(&env, "voice.test", Some(&pebble.issuing_root())).expect("issued after the retry");
}

/// Waits (up to 60 s) until `env`'s gateway serves `host` a certificate chaining to `root`.
async fn until_served(env: &Env, host: &str, root: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match connect(env, host, Some(root)) {
            Ok(_) => return,
            Err(e) => assert!(Instant::now() < deadline, "{host} never served: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_answers_the_challenge_of_another_sharing_its_storage() {
    // Pebble validates at A's plain-HTTP listener only, as a balancer in front of two
    // replicas may send it there; B orders.
    let a = Env::new();
    let b = Env::new();
    let pebble = pebble(&a, 7_776_000);
    let up = Upstream::start("app").await;
    let storage = a.path("shared").display().to_string();
    let _ga = a.start(&config_at(&a, &pebble, &up, &[], &["voice.test"], &storage));
    let _gb = b.start(&config_at(&b, &pebble, &up, &["voice.test"], &[], &storage));
    until(&b, "issued by B", Duration::from_secs(60), |t| {
        orders(t, "issued") >= 1.0
    })
    .await;
    connect(&b, "voice.test", Some(&pebble.issuing_root())).expect("served by B");
    // The answer was withdrawn once the order was done.
    let tokens = std::fs::read_dir(a.path("shared"))
        .expect("storage")
        .filter_map(Result::ok)
        .map(|e| e.path().join(".well-known/acme-challenge"))
        .find(|p| p.is_dir())
        .expect("the challenge directory");
    assert_eq!(std::fs::read_dir(tokens).expect("list").count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_storage_order_each_certificate_once() {
    let a = Env::new();
    let b = Env::new();
    let pebble = pebble(&a, 7_776_000);
    let up = Upstream::start("app").await;
    let storage = a.path("shared").display().to_string();
    let hosts = ["voice.test", "chat.test"];
    let ga = a.start(&config_at(&a, &pebble, &up, &hosts, &[], &storage));
    let gb = b.start(&config_at(&b, &pebble, &up, &hosts, &[], &storage));
    let root = pebble.issuing_root();
    for env in [&a, &b] {
        for host in hosts {
            until_served(env, host, &root).await;
        }
    }
    // One certificate per host in all: the other replica waited for the lock, then found
    // the stored certificate (or picked the files up by its file check). An order may
    // still fail (Pebble's validation on a loaded machine) and be made again: every order
    // Pebble saw is one of the two issued or one counted as failed, never a duplicate.
    let logs = || format!("A:\n{}\nB:\n{}", ga.log_text(), gb.log_text());
    // (Counted a moment after the certificate is installed.)
    let deadline = Instant::now() + Duration::from_secs(20);
    let (issued, failed) = loop {
        let (_, ta) = a.metrics_get("/metrics").await;
        let (_, tb) = b.metrics_get("/metrics").await;
        let issued = orders(&ta, "issued") + orders(&tb, "issued");
        let failed = orders(&ta, "failed") + orders(&tb, "failed");
        if issued >= 2.0 || Instant::now() > deadline {
            break (issued, failed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(issued, 2.0, "{}", logs());
    assert_eq!(pebble.orders() as f64, issued + failed, "{}", logs());
}

#[test]
fn check_reports_every_problem_of_the_acme_block() {
    let env = Env::new();
    std::fs::write(env.path("not-a-dir"), "x").expect("write");
    let text = format!(
        "listen:\n  https: \"127.0.0.1:{}\"\nacme:\n  email: not-an-address\n  directory: http://acme.example/dir\n  storage: not-a-dir/acme\n  ca_bundle: missing.pem\n  colour: blue\nroutes:\n  - host: \"*.apps.test\"\n    upstream: 127.0.0.1:9\n    tls: acme\n  - host: voice.test\n    upstream: 127.0.0.1:9\n    tls: acme\n  - host: chat.test\n    upstream: 127.0.0.1:9\n    tls: acmee\n",
        env.https
    );
    let path = env.write_config(&text);
    let (status, _, err) = common::check(&path);
    assert!(!status.success(), "{err}");
    let file = path.display().to_string();
    for (line, needle) in [
        (4, "acme.email: invalid e-mail address"),
        (
            5,
            "acme.directory: directory URL \"http://acme.example/dir\" is not https://",
        ),
        (6, "acme.storage: "),
        (7, "acme.ca_bundle: cannot read"),
        (8, "acme.colour: unknown key"),
        (12, "routes[0].tls: `tls: acme` needs an exact host name"),
        (18, "routes[2].tls: invalid tls \"acmee\""),
    ] {
        let found = err
            .lines()
            .any(|l| l.starts_with(&format!("{file}:{line}:")) && l.contains(needle));
        assert!(found, "line {line}: {needle}\n{err}");
    }
    assert!(err.contains("set `listen.http`"), "{err}");
    // Nothing was created by the check.
    assert!(!env.path("acme").exists());
}

#[test]
fn check_accepts_a_good_acme_block_without_contacting_the_server() {
    let env = Env::new();
    let text = format!(
        "{}acme:\n  email: ops@example.com\n  directory: https://127.0.0.1:9/dir\n  storage: state/acme/\nroutes:\n  - host: voice.test\n    upstream: 127.0.0.1:9\n    tls: acme\n",
        env.listen_and_tls()
    );
    let (status, out, err) = common::check(&env.write_config(&text));
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains(", ACME for voice.test (https://127.0.0.1:9/dir)"),
        "{out}"
    );
    assert!(!env.path("state").exists(), "check creates nothing");
}
