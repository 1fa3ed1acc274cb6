//! Issue 11: a bounded fuzzing pass against the real binary. Well-formed requests of the
//! kinds the gateway handles (GET, bodies by length and chunked, upgrades, odd targets,
//! many fields) are mutated at random — bytes flipped, dropped, repeated; CR, LF, NUL,
//! colons, framing fields and escapes inserted — or replaced by random bytes, and sent
//! over TLS, many at once. Whatever comes back, the gateway must stay up, log no panic
//! and no error, and serve a normal request afterwards.
//!
//! `FUZZ_CASES` (default 400) and `FUZZ_SEED` (default: the clock, printed) set the run;
//! half the cases always come from a fixed seed, so every run covers those;
//! `bench/fuzz.sh` runs a long one against a release build.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{client, Env, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The seed of the half of the cases that is the same in every run.
const FIXED_SEED: u64 = 0x5eed_0ff0_2201;

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const CORPUS: &[&str] = &[
    "GET /echo?q=1 HTTP/1.1\r\nHost: a.test\r\nUser-Agent: fuzz\r\nAccept: */*\r\n\r\n",
    "POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 11\r\n\r\nhello world",
    "POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
    "GET /ws HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n",
    "GET https://a.test/echo HTTP/1.1\r\nHost: a.test\r\n\r\n",
    "HEAD /sse HTTP/1.0\r\nHost: a.test:443\r\nX-Forwarded-For: 1.2.3.4, 5.6.7.8\r\nCookie: a=b\r\n\r\n",
    "PUT /echo/%2e%2e/x HTTP/1.1\r\nHost: A.TEST.\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
];

const INSERTS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b" ",
    b"\t",
    b":",
    b"\xff\xfe",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Host: b.test\r\n",
    b"Expect: 100-continue\r\n",
    b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n",
    b"ffffffffffffffff\r\n",
    b"%00",
    b"/../",
    b" HTTP/1.1\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
];

fn mutate(rng: &mut Rng) -> Vec<u8> {
    if rng.below(10) == 0 {
        return (0..rng.below(600)).map(|_| rng.next() as u8).collect();
    }
    let mut req = CORPUS[rng.below(CORPUS.len())].as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(req.len() + 1);
        match rng.below(6) {
            0 => {
                if at < req.len() {
                    req[at] = rng.next() as u8;
                }
            }
            1 => {
                let end = (at + rng.below(16)).min(req.len());
                req.drain(at..end);
            }
            2 => {
                let end = (at + rng.below(40)).min(req.len());
                let copy = req[at..end].to_vec();
                req.splice(at..at, copy);
            }
            3 => req.truncate(at),
            _ => {
                let insert = INSERTS[rng.below(INSERTS.len())];
                req.splice(at..at, insert.iter().copied());
            }
        }
    }
    req
}

/// Sends one case on its own connection; reads what comes back for a moment.
async fn send(connector: tokio_native_tls::TlsConnector, port: u16, case: Vec<u8>) {
    let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    let Ok(mut tls) = connector.connect("a.test", tcp).await else {
        return;
    };
    let _ = tls.write_all(&case).await;
    let mut buf = vec![0u8; 64 << 10];
    let reading = async { while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_millis(1500), reading).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_never_take_the_gateway_down() {
    let cases: usize = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    // Half the cases from a fixed seed (every run covers them), half from the clock's
    // (or FUZZ_SEED's), printed so a failure can be replayed.
    eprintln!("fuzz: {cases} cases, seeds {FIXED_SEED} and FUZZ_SEED={seed}");
    let a = Upstream::start("A").await;
    let env = Env::new();
    // A short header deadline so that truncated heads end quickly.
    let config = format!(
        "{}limits: {{ header_timeout: 1s }}\nroutes:\n  - host: a.test\n    upstream: {}\n    max_body: 1K\n",
        env.listen_and_tls(),
        a.addr
    );
    let mut gw = env.start(&config);
    let mut tls = native_tls::TlsConnector::builder();
    tls.danger_accept_invalid_certs(true);
    let connector = tokio_native_tls::TlsConnector::from(tls.build().expect("tls"));
    let mut pending = tokio::task::JoinSet::new();
    for (run, seed) in [FIXED_SEED, seed].into_iter().enumerate() {
        let mut rng = Rng(seed | 1);
        for _ in 0..(cases + run) / 2 {
            if pending.len() >= 64 {
                let _ = pending.join_next().await;
            }
            pending.spawn(send(connector.clone(), env.https, mutate(&mut rng)));
        }
    }
    while pending.join_next().await.is_some() {}

    assert!(
        gw.child.try_wait().ok().flatten().is_none(),
        "the gateway exited (FUZZ_SEED={seed}):\n{}",
        gw.log_text()
    );
    let log = gw.log_text();
    assert!(!log.contains("panicked"), "FUZZ_SEED={seed}:\n{log}");
    assert_eq!(gw.errors_logged(), Vec::<String>::new(), "FUZZ_SEED={seed}");
    let c = client(&env, &["a.test"], false);
    let resp = c
        .get(format!("https://a.test:{}/echo", env.https))
        .send()
        .await
        .expect("served after the fuzzing");
    assert_eq!(resp.status(), 200);
}
