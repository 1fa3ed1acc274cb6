//! Issue 16 against the real binary: two gateway replicas sharing their rate limits and
//! failed-login counts through a real `redis-server`, what they do when it is slow or
//! gone, and `listen.http_mode: proxy` behind a balancer that terminates TLS.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::{client, sample, Env, Gateway, Upstream};
use reqwest::header::HeaderMap;

/// The per-call timeout the replicas are given: each request that meets a slow or dead
/// Redis may wait this long, and not longer.
const TIMEOUT_MS: u64 = 100;
/// What the machine may add to a request on top of it (a loaded CI machine, one CPU).
const SLACK_MS: u64 = 400;

fn store(redis: &Redis, on_error: &str) -> String {
    format!(
        "limits_store:\n  redis: {}\n  timeout: {TIMEOUT_MS}ms\n  on_error: {on_error}\n",
        redis.url()
    )
}

/// A route keyed by `X-Client`, so each phase of a test starts on fresh buckets.
fn limited(host: &str, up: &Upstream, rate: &str, burst: u32) -> String {
    format!(
        "  - host: {host}\n    upstream: {}\n    rate_limit: {{ rate: {rate}, burst: {burst}, key: \"header:X-Client\" }}\n",
        up.addr
    )
}

/// A replica: its directory, process and HTTPS client.
struct Replica {
    env: Env,
    gw: Gateway,
    client: reqwest::Client,
}

impl Replica {
    fn start(top: &str, routes: &str) -> Replica {
        let env = Env::new();
        let gw = env.start(&format!("{}{top}routes:\n{routes}", env.listen_and_tls()));
        let client = client(&env, &["a.test", "up.test"], false);
        Replica { env, gw, client }
    }

    /// `GET https://HOST/` as client `who`: the status, the headers, the time it took.
    async fn get(&self, host: &str, who: &str) -> (u16, HeaderMap, Duration) {
        let started = Instant::now();
        let resp = self
            .client
            .get(format!("https://{host}:{}/", self.env.https))
            .header("x-client", who)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let _ = resp.bytes().await;
        (status, headers, started.elapsed())
    }

    async fn metrics(&self) -> String {
        self.env.metrics_get("/metrics").await.1
    }

    /// Rewrites routes.yaml and reloads, waiting (20 s at most) for the reload's log line.
    fn reload(&self, top: &str, routes: &str) {
        let done = |gw: &Gateway| gw.log_text().matches("event=reload result=success").count();
        let before = done(&self.gw);
        let env = &self.env;
        env.write_config(&format!("{}{top}routes:\n{routes}", env.listen_and_tls()));
        self.gw.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(20);
        while done(&self.gw) == before {
            assert!(
                Instant::now() < deadline,
                "no reload:\n{}",
                self.gw.log_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// Requests from client `who` to `host`, alternating between the replicas, `n` in all.
async fn alternate(replicas: &[&Replica], host: &str, who: &str, n: usize) -> Vec<u16> {
    let mut codes = Vec::new();
    for i in 0..n {
        codes.push(replicas[i % replicas.len()].get(host, who).await.0);
    }
    codes
}

/// Four requests from `who` to each replica in turn: the statuses and the slowest time.
async fn four_each(replicas: &[&Replica], who: &str) -> (Vec<u16>, Duration) {
    let (mut codes, mut slowest) = (Vec::new(), Duration::ZERO);
    for r in replicas {
        for _ in 0..4 {
            let (status, _, took) = r.get("a.test", who).await;
            codes.push(status);
            slowest = slowest.max(took);
        }
    }
    (codes, slowest)
}

fn ttl_ms(redis: &Redis, key: &str) -> i64 {
    redis.cli(&["PTTL", key]).trim().parse().unwrap_or(-3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_bucket_and_keys_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(dir.path());
    let up = Upstream::start("A").await;
    let routes = limited("a.test", &up, "1/m", 4) + &limited("up.test", &up, "1/s", 2);
    let top = store(&redis, "local");
    let (r1, r2) = (Replica::start(&top, &routes), Replica::start(&top, &routes));

    // Alternating replicas, the client gets its burst of 4 once, not once per replica.
    let codes = alternate(&[&r1, &r2], "a.test", "alice", 6).await;
    assert_eq!(codes, [200, 200, 200, 200, 429, 429]);
    let (status, headers, _) = r1.get("a.test", "alice").await;
    assert_eq!(status, 429);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // Another client is untouched, and sees the shared count in `RateLimit`.
    let (status, headers, _) = r2.get("a.test", "bob").await;
    assert_eq!(status, 200);
    assert_eq!(headers["ratelimit"], "\"default\";r=3;t=60");

    // One key per client, named by route, settings and a hash of the header (never the
    // header itself), expiring when its bucket would be full again: 4 × 60 s at most.
    let keys = redis.keys("gateway:rate:a.test:*");
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys
        .iter()
        .all(|k| k.starts_with("gateway:rate:a.test:60000000:4:h:")));
    assert!(!keys
        .iter()
        .any(|k| k.contains("alice") || k.contains("bob")));
    for key in &keys {
        let ttl = ttl_ms(&redis, key);
        assert!((1..=240_000).contains(&ttl), "{key}: PTTL {ttl}");
    }

    // A 1/s route: the key lives 2 s at most after a full burst, then is gone, and the
    // client has its whole burst again.
    assert_eq!(
        alternate(&[&r1, &r2], "up.test", "carol", 3).await,
        [200, 200, 429]
    );
    let key = redis.keys("gateway:rate:up.test:*");
    assert_eq!(key.len(), 1, "{key:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis.cli(&["EXISTS", &key[0]]).trim().eq("0") {
        assert!(Instant::now() < deadline, "{} never expired", key[0]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        alternate(&[&r2, &r1], "up.test", "carol", 3).await,
        [200, 200, 429]
    );

    let m = r1.metrics().await;
    assert_eq!(
        sample(&m, "gateway_limits_store_errors_total{kind=\"timeout\"}"),
        Some(0.0),
        "{m}"
    );
    assert!(r1.gw.errors_logged().is_empty() && r2.gw.errors_logged().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_slow_or_gone_falls_back_then_sharing_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut redis = Redis::start(dir.path());
    let up = Upstream::start("A").await;
    let routes = limited("a.test", &up, "1/m", 3);
    let top = store(&redis, "local");
    let (r1, r2) = (Replica::start(&top, &routes), Replica::start(&top, &routes));
    assert_eq!(
        alternate(&[&r1, &r2], "a.test", "warm", 4).await,
        [200, 200, 200, 429]
    );

    // Frozen: it holds the connection and answers nothing. Each replica falls back to
    // its own buckets (3 per replica), and no request waits much past the timeout.
    redis.pause(true);
    let (codes, mut slowest) = four_each(&[&r1, &r2], "frozen").await;
    assert_eq!(codes, [200, 200, 200, 429, 200, 200, 200, 429]);
    let limit = Duration::from_millis(TIMEOUT_MS + SLACK_MS);
    eprintln!("slowest request with Redis frozen: {slowest:?}");
    assert!(
        slowest < limit,
        "a request took {slowest:?} with Redis frozen"
    );
    let m = r1.metrics().await;
    let timeouts = sample(&m, "gateway_limits_store_errors_total{kind=\"timeout\"}");
    assert!(timeouts >= Some(1.0), "{m}");
    assert!(r1.gw.log_text().contains("event=limits_store_down"));

    // Gone: the connection is refused; still no 5xx, still no wait.
    redis.pause(false);
    redis.stop();
    let (codes, took) = four_each(&[&r1, &r2], "gone").await;
    slowest = slowest.max(took);
    assert_eq!(codes, [200, 200, 200, 429, 200, 200, 200, 429]);
    eprintln!("slowest request with Redis frozen or gone: {slowest:?}");
    assert!(
        slowest < limit,
        "a request took {slowest:?} with Redis gone"
    );

    // Back (empty, without the scripts: EVALSHA falls back to EVAL): each replica finds
    // it again by itself within its backoff (2 s at most), and the limit is shared.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    for (i, r) in [&r1, &r2].into_iter().enumerate() {
        let before = redis.keys("gateway:rate:a.test:*").len();
        for n in 0.. {
            // A new client each time: one key in Redis once the replica is back on it.
            let (status, _, _) = r.get("a.test", &format!("probe-{i}-{n}")).await;
            assert_eq!(status, 200);
            if redis.keys("gateway:rate:a.test:*").len() > before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {i} never used Redis again"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(
        alternate(&[&r1, &r2], "a.test", "back", 5).await,
        [200, 200, 200, 429, 429]
    );
    for r in [&r1, &r2] {
        assert!(r.gw.log_text().contains("event=limits_store_up"));
        assert!(r.gw.errors_logged().is_empty(), "{}", r.gw.log_text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_allow_and_deny_without_any_redis() {
    let up = Upstream::start("A").await;
    // Nothing listens there: the replica starts all the same.
    let nowhere = format!("redis://:s3cret@127.0.0.1:{}/0", common::free_port());
    let routes = limited("a.test", &up, "1/m", 1);
    for (on_error, expected) in [("allow", [200, 200, 200]), ("deny", [429, 429, 429])] {
        let top = format!("limits_store: {{ redis: \"{nowhere}\", timeout: {TIMEOUT_MS}ms, on_error: {on_error} }}\n");
        let r = Replica::start(&top, &routes);
        let mut codes = Vec::new();
        for _ in 0..3 {
            let (status, headers, took) = r.get("a.test", "x").await;
            codes.push(status);
            assert!(
                took < Duration::from_millis(TIMEOUT_MS + SLACK_MS),
                "{took:?}"
            );
            if on_error == "allow" {
                assert!(headers.get("ratelimit").is_none(), "no verdict, no fields");
            } else {
                assert_eq!(headers["retry-after"], "1");
            }
        }
        assert_eq!(codes, expected, "on_error: {on_error}");
        let m = r.metrics().await;
        let counted: f64 = ["timeout", "connection", "response", "backoff"]
            .iter()
            .filter_map(|k| {
                sample(
                    &m,
                    &format!("gateway_limits_store_errors_total{{kind=\"{k}\"}}"),
                )
            })
            .sum();
        assert_eq!(counted, 3.0, "every request counted once:\n{m}");
        // The URL's password is never shown, in the log or by `gateway check`.
        let log = r.gw.log_text();
        assert!(
            log.contains("event=limits_store_down store=redis://***@127.0.0.1:"),
            "{log}"
        );
        assert!(!log.contains("s3cret"), "{log}");
        let (status, stdout, stderr) = common::check(&r.env.path("routes.yaml"));
        assert!(status.success(), "{stderr}");
        assert!(
            stdout.contains("limits shared through redis://***@127.0.0.1:"),
            "{stdout}"
        );
        assert!(!stdout.contains("s3cret") && !stderr.contains("s3cret"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_is_retried_until_redis_accepts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(dir.path());
    assert_eq!(
        redis.cli(&["CONFIG", "SET", "requirepass", "old"]).trim(),
        "OK"
    );
    let up = Upstream::start("A").await;
    let top = format!(
        "limits_store: {{ redis: \"redis://:new@127.0.0.1:{}/0\", timeout: {TIMEOUT_MS}ms }}\n",
        redis.port
    );
    let r = Replica::start(&top, &limited("a.test", &up, "1/m", 2));
    // Refused: this replica's own buckets meanwhile.
    assert_eq!(alternate(&[&r], "a.test", "fay", 3).await, [200, 200, 429]);
    let log = r.gw.log_text();
    assert!(log.contains("event=limits_store_down"), "{log}");
    assert!(!log.contains(":new@"), "{log}");
    // The password is rotated on the Redis side: the replica gets in within its backoff.
    let rotated = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "-a",
            "old",
            "--no-auth-warning",
        ])
        .args(["CONFIG", "SET", "requirepass", "new"])
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&rotated.stdout).trim(), "OK");
    let keys = |r: &Redis| {
        let out = Command::new("redis-cli")
            .args(["-p", &r.port.to_string(), "-a", "new", "--no-auth-warning"])
            .args(["--scan", "--pattern", "gateway:rate:*"])
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in 0.. {
        let (status, _, _) = r.get("a.test", &format!("probe-{n}")).await;
        assert_eq!(status, 200);
        if keys(&redis) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never connected:\n{}",
            r.gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(r.gw.log_text().contains("event=limits_store_up"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_the_rate_applies_on_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(dir.path());
    let up = Upstream::start("A").await;
    let top = store(&redis, "local");
    let before = limited("a.test", &up, "1/m", 2);
    let (r1, r2) = (Replica::start(&top, &before), Replica::start(&top, &before));
    assert_eq!(
        alternate(&[&r1, &r2], "a.test", "dave", 3).await,
        [200, 200, 429]
    );

    let after = limited("a.test", &up, "1/m", 5);
    r1.reload(&top, &after);
    r2.reload(&top, &after);
    // The new settings name new buckets: the client has the new burst, once across both.
    let codes = alternate(&[&r2, &r1], "a.test", "dave", 7).await;
    assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429]);
    let (_, headers, _) = r1.get("a.test", "erin").await;
    assert_eq!(headers["ratelimit-policy"], "\"default\";q=5;w=300");
    assert_eq!(redis.keys("gateway:rate:a.test:60000000:5:*").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_counted_across_replicas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(dir.path());
    let up = Upstream::start("A").await;
    let hash = bcrypt::hash("right", 4).expect("hash");
    let routes = format!(
        "  - host: a.test\n    upstream: {}\n    basic_auth: {{ users: {{ ann: \"{hash}\" }} }}\n    auth_failures: {{ limit: 3, per: 1m }}\n",
        up.addr
    );
    let top = store(&redis, "local");
    let (r1, r2) = (Replica::start(&top, &routes), Replica::start(&top, &routes));
    let login = |r: &Replica, password: &str| {
        r.client
            .get(format!("https://a.test:{}/", r.env.https))
            .basic_auth("ann", Some(password))
            .send()
    };
    assert_eq!(login(&r1, "right").await.expect("login").status(), 200);
    for r in [&r1, &r2, &r1] {
        assert_eq!(login(r, "wrong").await.expect("login").status(), 401);
    }
    // Three failures over two replicas: blocked on both, even with the right password.
    for r in [&r2, &r1] {
        let resp = login(r, "right").await.expect("login");
        assert_eq!(resp.status(), 429);
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
    }
    let keys = redis.keys("gateway:logins:a.test:*");
    assert_eq!(keys, ["gateway:logins:a.test:3:60000:ip:127.0.0.1"]);
    assert!((1..=60_000).contains(&ttl_ms(&redis, &keys[0])));
}

/// `http_mode: proxy` on the replica's plain-HTTP port, `trusted` naming the balancer.
fn plain_proxy(env: &Env, up: &Upstream, trusted: &str, webroot: &Path) -> String {
    let listen = env
        .listen_and_tls()
        .replacen("listen:\n", "listen:\n  http_mode: proxy\n", 1);
    format!(
        "{listen}trusted_proxies: [\"{trusted}\"]\nacme_webroot: {}\nroutes:\n{}",
        webroot.display(),
        limited("a.test", up, "1/m", 3)
    )
}

fn http_client(env: &Env) -> reqwest::Client {
    reqwest::Client::builder()
        .resolve("a.test", SocketAddr::from(([127, 0, 0, 1], env.http)))
        .resolve("nobody.test", SocketAddr::from(([127, 0, 0, 1], env.http)))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_proxy_serves_routes_on_plain_http() {
    let up = Upstream::start("A").await;
    let env = Env::new();
    let webroot = env.path("webroot");
    std::fs::create_dir_all(webroot.join(".well-known/acme-challenge")).expect("mkdir");
    std::fs::write(
        webroot.join(".well-known/acme-challenge/tok-1"),
        "tok-1.answer",
    )
    .expect("write");
    // The test client (127.0.0.1) is not the trusted balancer.
    let _gw = env.start(&plain_proxy(&env, &up, "10.0.0.0/8", &webroot));
    let c = http_client(&env);
    let url = format!("http://a.test:{}/x?y=1", env.http);

    // Proxied, not redirected; a spoofed scheme and client address are ignored.
    let spoof = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-for", "203.0.113.9"),
        ("x-client", "k"),
    ];
    let (status, headers, seen) = common::get_json(&c, &url, &spoof).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["uri"], "/x?y=1");
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-host"], format!("a.test:{}", env.http));
    assert!(
        headers.get("strict-transport-security").is_none(),
        "{headers:?}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers.contains_key("x-request-id"));

    // The route's limit holds on plain HTTP, with its fields.
    let mut codes = vec![status];
    for _ in 0..3 {
        codes.push(common::get_json(&c, &url, &spoof).await.0);
    }
    assert_eq!(codes, [200, 200, 200, 429]);

    // A host nobody serves: 404, not a redirect. The ACME path keeps working.
    let (status, _, _) =
        common::get_json(&c, &format!("http://nobody.test:{}/", env.http), &[]).await;
    assert_eq!(status, 404);
    let challenge = format!(
        "http://a.test:{}/.well-known/acme-challenge/tok-1",
        env.http
    );
    let resp = c.get(&challenge).send().await.expect("challenge");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "tok-1.answer");

    // HTTPS is unchanged: HSTS and `https`.
    let tls = client(&env, &["a.test"], false);
    let (status, headers, seen) = common::get_json(
        &tls,
        &format!("https://a.test:{}/", env.https),
        &[("x-client", "other")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("strict-transport-security"));
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");

    // Counted under the route like HTTPS requests, on the `http` listener.
    let (_, m) = env.metrics_get("/metrics").await;
    let ok = "gateway_requests_total{code=\"200\",method=\"GET\",route=\"a.test\"}";
    assert!(sample(&m, ok) >= Some(5.0), "{m}");
    let limited = "gateway_requests_total{code=\"429\",method=\"GET\",route=\"a.test\"}";
    assert_eq!(sample(&m, limited), Some(1.0), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_proxy_believes_a_trusted_balancer() {
    let up = Upstream::start("A").await;
    let env = Env::new();
    let webroot = env.path("webroot");
    let _gw = env.start(&plain_proxy(&env, &up, "127.0.0.1", &webroot));
    let c = http_client(&env);
    let url = format!("http://a.test:{}/", env.http);

    // The balancer terminated TLS: the app hears `https`, and the browser gets HSTS.
    let vouched = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-for", "198.51.100.4"),
    ];
    let (status, headers, seen) = common::get_json(&c, &url, &vouched).await;
    assert_eq!(status, 200);
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    assert_eq!(seen["headers"]["x-real-ip"], "198.51.100.4");
    assert!(headers.contains_key("strict-transport-security"));

    // Plain HTTP through the balancer, or no claim at all: `http`, no HSTS.
    for claim in [&[("x-forwarded-proto", "http")][..], &[][..]] {
        let (status, headers, seen) = common::get_json(&c, &url, claim).await;
        assert_eq!(status, 200);
        assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
        assert!(headers.get("strict-transport-security").is_none());
    }
    // `gateway check` says how the HTTP listener serves.
    let (_, stdout, _) = common::check(&env.path("routes.yaml"));
    assert!(
        stdout.contains(&format!("http 127.0.0.1:{} (proxy)", env.http)),
        "{stdout}"
    );
}
