//! Debian's Pebble ACME test server (packages `pebble`: /usr/bin/pebble and
//! /usr/bin/pebble-challtestsrv) on free loopback ports, for the ACME tests.
//!
//! `pebble-challtestsrv` serves DNS only and answers every name with 127.0.0.1, so Pebble
//! validates HTTP-01 challenges at 127.0.0.1:`http_port` — the gateway's plain-HTTP
//! listener. Pebble's own HTTPS listeners present a certificate from a mini CA made here
//! ([`Pebble::ca_bundle`]); the certificates Pebble issues chain to a root it generates
//! anew at each start ([`Pebble::issuing_root`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509NameBuilder, X509NameRef, X509};

/// How long a process may take to start listening.
const READY: Duration = Duration::from_secs(20);

/// How Pebble is to behave.
#[derive(Clone, Debug)]
pub struct PebbleOptions {
    /// The port Pebble sends HTTP-01 validation requests to (on 127.0.0.1): the gateway's
    /// plain-HTTP listener. Must be set (0 is refused).
    pub http_port: u16,
    /// `certificateValidityPeriod`: how long issued certificates are valid, in seconds.
    pub validity_secs: u64,
    /// `PEBBLE_VA_ALWAYS_VALID=1`: every challenge is valid without any request made.
    pub always_valid: bool,
    /// `PEBBLE_WFE_NONCEREJECT`: the percentage of good nonces rejected with `badNonce`.
    pub reject_nonces: u8,
    /// `PEBBLE_AUTHZREUSE`: the percentage of new orders reusing a valid authorization.
    pub authz_reuse: u8,
}

impl Default for PebbleOptions {
    fn default() -> Self {
        PebbleOptions {
            http_port: 0,
            validity_secs: 7_776_000,
            always_valid: false,
            reject_nonces: 0,
            authz_reuse: 0,
        }
    }
}

/// Running `pebble` and `pebble-challtestsrv` processes; both killed (by PID) on drop.
pub struct Pebble {
    /// `DIR/pebble`: configuration, listener certificate and key, logs.
    dir: PathBuf,
    opts: PebbleOptions,
    /// ACME listener (directory at `/dir`).
    listen: u16,
    /// Management listener (`/roots/0`).
    mgmt: u16,
    /// challtestsrv's DNS port (TCP and UDP).
    dns: u16,
    /// challtestsrv's management port (DNS overrides).
    cts_mgmt: u16,
    pebble: Option<Child>,
    challtestsrv: Option<Child>,
}

impl Pebble {
    /// Starts pebble-challtestsrv (DNS only, answering every name with 127.0.0.1) and
    /// pebble in `dir` (a test temp dir), and waits until the directory URL answers.
    pub fn start(dir: &Path, opts: PebbleOptions) -> Pebble {
        assert!(opts.http_port != 0, "PebbleOptions::http_port must be set");
        let dir = dir.join("pebble");
        std::fs::create_dir_all(&dir).expect("mkdir pebble");
        let (ca, cert, key) = listener_cert();
        for (file, pem) in [("ca.pem", ca), ("cert.pem", cert), ("key.pem", key)] {
            std::fs::write(dir.join(file), pem).expect("write pebble PEM");
        }
        let (listen, mgmt, dns) = (super::free_port(), super::free_port(), super::free_port());
        let cts_mgmt = super::free_port();
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": dir.join("cert.pem"),
            "privateKey": dir.join("key.pem"),
            "httpPort": opts.http_port,
            "tlsPort": super::free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": opts.validity_secs,
        }});
        std::fs::write(dir.join("pebble.json"), config.to_string()).expect("write pebble.json");

        let log = dir.join("challtestsrv.log");
        let mut cts = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{cts_mgmt}")])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdin(Stdio::null())
            .stdout(log_file(&log))
            .stderr(log_file(&log))
            .spawn()
            .expect("pebble-challtestsrv (Debian package pebble) serves the test DNS");
        let ready = wait_ready(&mut cts, &log, || {
            TcpStream::connect(("127.0.0.1", dns))
                .map(drop)
                .map_err(|e| e.to_string())
        });
        let mut p = Pebble {
            dir,
            opts,
            listen,
            mgmt,
            dns,
            cts_mgmt,
            pebble: None,
            challtestsrv: Some(cts),
        };
        if let Err(why) = ready {
            panic!("pebble-challtestsrv not serving DNS on port {dns}: {why}");
        }
        p.restart();
        p
    }

    /// Makes the test DNS answer `host` with `ip` (Pebble then validates there), until
    /// `dns_clear`.
    pub fn dns_a(&self, host: &str, ip: &str) {
        let body = serde_json::json!({"host": host, "addresses": [ip]}).to_string();
        self.cts_post("/add-a", &body);
    }

    /// Back to the default answer (127.0.0.1) for `host`.
    pub fn dns_clear(&self, host: &str) {
        let body = serde_json::json!({"host": host}).to_string();
        self.cts_post("/clear-a", &body);
    }

    fn cts_post(&self, path: &str, body: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.cts_mgmt)).expect("challtestsrv");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let req = format!(
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(
            out.starts_with("HTTP/1.") && out.contains(" 200"),
            "challtestsrv {path}: {out}"
        );
    }

    /// The ACME directory URL, `https://127.0.0.1:PORT/dir`.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.listen)
    }

    /// PEM of the mini CA that signed Pebble's own HTTPS (listener) certificate: what the
    /// gateway's `acme.ca_bundle` is set to.
    pub fn ca_bundle(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// PEM of Pebble's current issuing root (`https://127.0.0.1:MGMT/roots/0`), the root
    /// the certificates it issues chain to. A restart makes a new one.
    pub fn issuing_root(&self) -> Vec<u8> {
        match https_get(&self.ca_bundle(), self.mgmt, "/roots/0") {
            Ok((200, body)) if body.starts_with(b"-----BEGIN CERTIFICATE-----") => body,
            Ok((status, body)) => panic!("/roots/0: {status} {}", String::from_utf8_lossy(&body)),
            Err(e) => panic!("/roots/0: {e}\n{}", self.log_text()),
        }
    }

    /// Kills pebble (not challtestsrv) by PID and waits for it; does nothing when stopped.
    pub fn stop(&mut self) {
        kill(&mut self.pebble);
    }

    /// (Re)starts pebble with the same ports and configuration, stopping it first if it
    /// runs, and waits until the directory URL answers. Pebble keeps nothing across
    /// restarts: accounts, orders and authorizations are forgotten and the issuing root
    /// is new. Its log is appended to.
    pub fn restart(&mut self) {
        self.stop();
        let log = self.dir.join("pebble.log");
        let mut cmd = Command::new("pebble");
        cmd.arg("-config")
            .arg(self.dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns)])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env(
                "PEBBLE_WFE_NONCEREJECT",
                self.opts.reject_nonces.to_string(),
            )
            .env("PEBBLE_AUTHZREUSE", self.opts.authz_reuse.to_string())
            .env_remove("PEBBLE_VA_ALWAYS_VALID")
            .stdin(Stdio::null())
            .stdout(log_file(&log))
            .stderr(log_file(&log));
        if self.opts.always_valid {
            cmd.env("PEBBLE_VA_ALWAYS_VALID", "1");
        }
        let mut child = cmd
            .spawn()
            .expect("pebble (Debian package pebble) is the test ACME server");
        let (ca, port) = (self.ca_bundle(), self.listen);
        let ready = wait_ready(&mut child, &log, || match https_get(&ca, port, "/dir") {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(format!("{status} {}", String::from_utf8_lossy(&body))),
            Err(e) => Err(e),
        });
        self.pebble = Some(child);
        if let Err(why) = ready {
            panic!("pebble not ready at {}: {why}", self.directory());
        }
    }

    /// Pebble's stdout and stderr so far, over all its runs.
    pub fn log_text(&self) -> String {
        read(&self.dir.join("pebble.log"))
    }

    /// How many orders Pebble created so far, over all its runs: its log lines
    /// `Added order "ID" to the db`. (It logs `POST /order-plz -> calling handler()` for
    /// every new-order request, also for those it refuses, e.g. for a bad nonce.)
    pub fn orders(&self) -> usize {
        self.log_text().matches("Added order \"").count()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        kill(&mut self.pebble);
        kill(&mut self.challtestsrv);
    }
}

/// Kills the child (SIGKILL, by PID) if there is one, and reaps it.
fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Polls `ready` every 50 ms until it holds: Err (with `child`'s log `log`) when `child`
/// exits first or READY passes.
fn wait_ready(
    child: &mut Child,
    log: &Path,
    mut ready: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let deadline = Instant::now() + READY;
    loop {
        let why = match (child.try_wait(), ready()) {
            (Ok(Some(status)), _) => format!("exited ({status})"),
            (_, Ok(())) => return Ok(()),
            (_, Err(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            (_, Err(e)) => format!("{e} after {READY:?}"),
        };
        return Err(format!("{why}; log:\n{}", read(log)));
    }
}

/// `path` opened for appending (created if need be), for a child's output.
fn log_file(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `GET https://127.0.0.1:PORT{path}` trusting the CA in `ca`, as HTTP/1.0 (so the body
/// is never chunked and ends with the connection): (status, body).
fn https_get(ca: &Path, port: u16, path: &str) -> Result<(u16, Vec<u8>), String> {
    let ca = std::fs::read(ca).map_err(|e| format!("read CA: {e}"))?;
    let ca = native_tls::Certificate::from_pem(&ca).map_err(|e| format!("CA: {e}"))?;
    let tls = native_tls::TlsConnector::builder()
        .add_root_certificate(ca)
        .build();
    let tls = tls.map_err(|e| format!("TLS connector: {e}"))?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(5)));
    let mut tls = tls
        .connect("127.0.0.1", tcp)
        .map_err(|e| format!("TLS handshake: {e}"))?;
    write!(tls, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")
        .map_err(|e| format!("write request: {e}"))?;
    let mut raw = Vec::new();
    // A connection closed without close_notify after the response still answered.
    if let (Err(e), true) = (tls.read_to_end(&mut raw), raw.is_empty()) {
        return Err(format!("read response: {e}"));
    }
    let text = String::from_utf8_lossy(&raw);
    let end = text
        .find("\r\n\r\n")
        .ok_or_else(|| format!("no response head: {text}"))?;
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    let status = status.ok_or_else(|| format!("bad status line: {text}"))?;
    Ok((status, raw[end + 4..].to_vec()))
}

/// (CA PEM, listener certificate PEM for IP 127.0.0.1 and DNS localhost, its key PEM),
/// all P-256.
fn listener_cert() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    let key = || PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("key");
    let builder = |cn: &str, key: &PKey<Private>, issuer: Option<&X509NameRef>| {
        let mut name = X509NameBuilder::new().expect("name");
        name.append_entry_by_nid(Nid::COMMONNAME, cn).expect("CN");
        let mut serial = BigNum::new().expect("bn");
        serial
            .rand(127, MsbOption::MAYBE_ZERO, false)
            .expect("rand");
        let mut b = X509::builder().expect("builder");
        b.set_version(2).expect("v3");
        b.set_serial_number(&serial.to_asn1_integer().expect("serial"))
            .expect("serial");
        let name = name.build();
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(issuer.unwrap_or(&name)).expect("issuer");
        b.set_pubkey(key).expect("pubkey");
        b.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
            .expect("nb");
        b.set_not_after(&Asn1Time::days_from_now(30).expect("time"))
            .expect("na");
        b
    };
    let (ca_key, leaf_key) = (key(), key());
    let mut ca = builder("pebble listener test CA", &ca_key, None);
    let bc = BasicConstraints::new().critical().ca().build().expect("bc");
    ca.append_extension(bc).expect("bc");
    let ku = KeyUsage::new()
        .critical()
        .key_cert_sign()
        .build()
        .expect("ku");
    ca.append_extension(ku).expect("ku");
    ca.sign(&ca_key, MessageDigest::sha256()).expect("sign CA");
    let ca = ca.build();

    let mut leaf = builder("localhost", &leaf_key, Some(ca.subject_name()));
    let eku = ExtendedKeyUsage::new().server_auth().build().expect("eku");
    leaf.append_extension(eku).expect("eku");
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .dns("localhost")
        .build(&leaf.x509v3_context(Some(&ca), None))
        .expect("san");
    leaf.append_extension(san).expect("san");
    leaf.sign(&ca_key, MessageDigest::sha256())
        .expect("sign leaf");
    let pem = |c: X509| c.to_pem().expect("pem");
    let key_pem = leaf_key.private_key_to_pem_pkcs8().expect("key pem");
    (pem(ca), pem(leaf.build()), key_pem)
}
