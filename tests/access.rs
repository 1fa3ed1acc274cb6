//! Issue 12 against the real binary: address allowlists (IPv4, IPv6, behind a trusted
//! proxy), Basic logins from routes.yaml and from a real `htpasswd -B` file, the
//! failed-login limit, `Authorization` stripped or passed, forward auth against a real
//! local sign-on service, and hashing kept off the worker threads.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::sign_on::SignOn;
use common::{client, hash_password, sample, Env, Upstream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;

fn config(env: &Env, top: &str, routes: &str) -> String {
    format!("{}{top}routes:\n{routes}", env.listen_and_tls())
}

fn route(host: &str, up: &Upstream, extra: &str) -> String {
    format!("  - host: {host}\n    upstream: {}\n{extra}", up.addr)
}

/// `Basic base64(user:password)`.
fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// Apache's `htpasswd -B` (Debian package `apache2-utils`, installed by `make test`):
/// adds or updates `user` in `file`.
fn htpasswd(file: &PathBuf, user: &str, password: &str) {
    let mut cmd = Command::new("htpasswd");
    if !file.exists() {
        cmd.arg("-c");
    }
    let status = cmd
        .args(["-B", "-b"])
        .arg(file)
        .args([user, password])
        .stderr(Stdio::null())
        .status()
        .expect("htpasswd not found: install Debian's `apache2-utils` (make test does)");
    assert!(status.success());
}

/// GET `https://HOST:PORT/echo` with `headers`: (status, response headers, echoed request).
async fn get(
    c: &reqwest::Client,
    env: &Env,
    host: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let url = format!("https://{host}:{}/echo", env.https);
    common::get_json(c, &url, headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_lists_decide_by_the_real_client_address() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let routes = route(
        "a.test",
        &a,
        "    allow: [\"127.0.0.1\", \"2001:db8::/32\"]\n",
    ) + &route("up.test", &a, "    allow: [\"10.0.0.0/8\"]\n");
    let gw = env.start(&config(&env, "", &routes));
    let c = client(&env, &["a.test", "up.test"], false);
    assert_eq!(get(&c, &env, "a.test", &[]).await.0, 200);
    let resp = c
        .get(format!("https://up.test:{}/echo", env.https))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 403);
    assert!(resp
        .text()
        .await
        .unwrap_or_default()
        .contains("may not use up.test"));
    // An untrusted peer's X-Forwarded-For is not believed.
    let xff = [("x-forwarded-for", "10.1.2.3")];
    assert_eq!(get(&c, &env, "up.test", &xff).await.0, 403);
    assert_eq!(a.hits(), 1, "nothing refused reached the app");
    // A reload applies a changed list.
    env.write_config(&config(
        &env,
        "",
        &routes.replace("10.0.0.0/8", "127.0.0.0/8"),
    ));
    gw.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&c, &env, "up.test", &[]).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the new allow list never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(gw);

    // Behind a trusted proxy (here: loopback), the right-most untrusted address counts.
    let env = Env::new();
    let top = "trusted_proxies: [\"127.0.0.0/8\"]\n";
    let _gw = env.start(&config(&env, top, &routes));
    let c = client(&env, &["a.test", "up.test"], false);
    assert_eq!(
        get(&c, &env, "a.test", &[("x-forwarded-for", "2001:db8::7")])
            .await
            .0,
        200
    );
    assert_eq!(
        get(&c, &env, "a.test", &[("x-forwarded-for", "2001:db9::7")])
            .await
            .0,
        403
    );
    assert_eq!(
        get(&c, &env, "up.test", &[("x-forwarded-for", "10.9.9.9")])
            .await
            .0,
        200
    );
    // The client's own left-hand entries are never believed.
    let spoof = [("x-forwarded-for", "10.9.9.9, 203.0.113.9")];
    assert_eq!(get(&c, &env, "up.test", &spoof).await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_lists_over_ipv6() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let text = format!(
        "listen:\n  https: \"[::1]:{}\"\ntls:\n  cert: certs/default.pem\n  key: certs/default.key\n\
         routes:\n{}{}",
        env.https,
        route("a.test", &a, "    allow: [\"::1/128\"]\n"),
        route("up.test", &a, "    allow: [\"2001:db8::/32\", \"127.0.0.1\"]\n"),
    );
    let path = env.write_config(&text);
    let gw = env.spawn(&path, &[], "gateway.log");
    let v6 = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], env.https));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(v6).is_err() {
        assert!(
            Instant::now() < deadline,
            "not listening on ::1:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let c = reqwest::Client::builder()
        .use_native_tls()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&env.cert_pem("default")).expect("cert"),
        )
        .resolve("a.test", v6)
        .resolve("up.test", v6)
        .build()
        .expect("client");
    let status = |host: &'static str| {
        let c = c.clone();
        let url = format!("https://{host}:{}/echo", env.https);
        async move { c.get(url).send().await.expect("request").status().as_u16() }
    };
    assert_eq!(status("a.test").await, 200, "::1 is in ::1/128");
    assert_eq!(status("up.test").await, 403, "::1 is not in 2001:db8::/32");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_routes_yaml_and_htpasswd() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let file = env.path("report.htpasswd");
    htpasswd(&file, "bob", "bobs-pass");
    let argon = hash_password("alices-pass");
    assert!(argon.starts_with("$argon2id$v=19$"), "{argon}");
    let auth = format!(
        "    basic_auth:\n      realm: reports\n      users: {{ alice: \"{argon}\" }}\n      htpasswd: {}\n",
        file.display()
    );
    let routes = route("a.test", &a, &auth)
        + &route(
            "up.test",
            &a,
            &(auth.clone() + "    pass_authorization: true\n"),
        );
    let top = "access_log: access.log\n";
    let gw = env.start(&config(&env, top, &routes));
    let c = client(&env, &["a.test", "up.test"], false);
    for (user, password) in [("alice", "alices-pass"), ("bob", "bobs-pass")] {
        let creds = basic(user, password);
        let (status, _, echo) = get(&c, &env, "a.test", &[("authorization", &creds)]).await;
        assert_eq!(status, 200, "{user}");
        assert!(
            echo["headers"].get("authorization").is_none(),
            "the app never sees the gateway's credentials"
        );
    }
    let (status, h, _) = get(
        &c,
        &env,
        "a.test",
        &[("authorization", &basic("bob", "nope"))],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        h["www-authenticate"],
        "Basic realm=\"reports\", charset=\"UTF-8\""
    );
    assert_eq!(
        get(&c, &env, "a.test", &[("authorization", &basic("eve", "x"))])
            .await
            .0,
        401
    );
    assert_eq!(get(&c, &env, "a.test", &[]).await.0, 401);
    assert_eq!(a.hits(), 2, "refused requests never reached the app");
    // pass_authorization: the app gets the header.
    let creds = basic("alice", "alices-pass");
    let (status, _, echo) = get(&c, &env, "up.test", &[("authorization", &creds)]).await;
    assert_eq!(status, 200);
    assert_eq!(echo["headers"]["authorization"], creds.as_str());

    // The access log names the user, never the credentials.
    let log = env.path("access.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 6 {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        text.contains("\"user\":\"alice\"") && text.contains("\"user\":\"bob\""),
        "{text}"
    );
    assert!(
        !text.contains("alices-pass") && !text.contains(&creds[6..]),
        "{text}"
    );

    // A user added to the file on disk can log in once the file is re-read (checked
    // every 10 s; waiting on the log line, since failed tries would count as failures).
    htpasswd(&file, "carol", "carols-pass");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !gw.log_text().contains("event=reload result=success") {
        assert!(
            Instant::now() < deadline,
            "not reloaded:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let creds = basic("carol", "carols-pass");
    assert_eq!(
        get(&c, &env, "a.test", &[("authorization", &creds)])
            .await
            .0,
        200
    );
    let (_, text) = env.metrics_get("/metrics").await;
    assert_eq!(
        sample(
            &text,
            r#"gateway_rejected_total{reason="auth",route="a.test"}"#
        )
        .map(|n| n >= 3.0),
        Some(true),
        "{text}"
    );
    assert_eq!(gw.errors_logged(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_check_refuses_weak_password_entries_at_their_line() {
    let env = Env::new();
    let file = env.path("users.htpasswd");
    htpasswd(&file, "bob", "bobs-pass");
    let mut text = std::fs::read_to_string(&file).expect("read");
    text.push_str("mallory:plaintext\n");
    std::fs::write(&file, text).expect("write");
    let config = format!(
        "routes:\n  - host: a.test\n    upstream: 1\n    basic_auth:\n      users: {{ eve: \"$apr1$x$y\" }}\n      htpasswd: {}\n",
        file.display()
    );
    let path = env.write_config(&config);
    let (status, _, err) = common::check(&path);
    assert!(!status.success());
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{}:5:21: routes[0].basic_auth.users.eve: not an accepted password hash: MD5-crypt",
            path.display()
        ))),
        "{err}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{}:2:1: user \"mallory\": not an accepted password hash: a plaintext",
            file.display()
        ))),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_past_the_limit_get_429_whatever_is_sent() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let hash = hash_password("right");
    let auth = format!(
        "    basic_auth: {{ users: {{ alice: \"{hash}\" }} }}\n    auth_failures: {{ limit: 3, per: 1m }}\n"
    );
    let _gw = env.start(&config(&env, "", &route("a.test", &a, &auth)));
    let c = client(&env, &["a.test"], false);
    for _ in 0..3 {
        assert_eq!(
            get(
                &c,
                &env,
                "a.test",
                &[("authorization", &basic("alice", "guess"))]
            )
            .await
            .0,
            401
        );
    }
    let (status, h, _) = get(
        &c,
        &env,
        "a.test",
        &[("authorization", &basic("alice", "right"))],
    )
    .await;
    assert_eq!(
        status, 429,
        "even the right password, until the window closes"
    );
    let retry: u64 = h["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((50..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(a.hits(), 0);
    env.metrics_until("auth_rate_limit not counted", |text| {
        sample(
            text,
            r#"gateway_rejected_total{reason="auth_rate_limit",route="a.test"}"#,
        ) == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_with_a_real_sign_on_service() {
    let a = Upstream::start("A").await;
    let sign_on = SignOn::start().await;
    let closed = common::free_port();
    let env = Env::new();
    let fa = |url: String, extra: &str| {
        format!(
            "    forward_auth:\n      url: {url}\n      copy_headers: [X-Auth-Request-User, X-Auth-Request-Email]\n{extra}"
        )
    };
    let url = format!("http://{}/oauth2/auth", sign_on.addr);
    let routes = route(
        "a.test",
        &a,
        &fa(
            url.clone(),
            "      sign_in: https://auth.test/oauth2/start?rd={url}\n      timeout: 2s\n",
        ),
    ) + &route(
        "up.test",
        &a,
        &fa(format!("http://127.0.0.1:{closed}/auth"), ""),
    );
    let gw = env.start(&config(&env, "", &routes));
    let c = client(&env, &["a.test", "up.test"], false);

    // Signed in: forwarded with the vouched fields, a forged one gone.
    let (status, _, echo) = get(
        &c,
        &env,
        "a.test",
        &[
            ("cookie", "session=good"),
            ("x-auth-request-user", "mallory"),
            ("x-auth-request-email", "mallory@example.com"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(echo["headers"]["x-auth-request-user"], "alice");
    assert_eq!(echo["headers"]["x-auth-request-email"], "alice@example.com");
    assert!(echo["headers"].get("x-not-copied").is_none());
    assert_eq!(echo["headers"]["cookie"], "session=good");
    // The check request: GET, no body, the client's cookie and the X-Forwarded-* fields.
    let check = sign_on.checks().pop().expect("a check");
    assert_eq!(
        (check.method.as_str(), check.path.as_str(), check.body_len),
        ("GET", "/oauth2/auth", 0)
    );
    let field = |name: &str| {
        check
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("cookie"), "session=good");
    assert_eq!(field("x-forwarded-method"), "GET");
    assert_eq!(field("x-forwarded-proto"), "https");
    assert_eq!(field("x-forwarded-host"), format!("a.test:{}", env.https));
    assert_eq!(field("x-forwarded-uri"), "/echo");
    assert_eq!(field("x-forwarded-for"), "127.0.0.1");
    assert_eq!(
        field("x-auth-request-user"),
        "",
        "the client's claim is not passed on"
    );
    assert_eq!(a.hits(), 1);

    // Not signed in: a browser is sent to sign in, an API client gets the 401 as it is.
    let browser = [("accept", "text/html,application/xhtml+xml")];
    let (status, h, _) = get(&c, &env, "a.test", &browser).await;
    assert_eq!(status, 302);
    let location = format!(
        "https://auth.test/oauth2/start?rd=https%3A%2F%2Fa.test%3A{}%2Fecho",
        env.https
    );
    assert_eq!(h["location"], location.as_str());
    let resp = c
        .get(format!("https://a.test:{}/echo", env.https))
        .header("accept", "application/json")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(resp.text().await.unwrap_or_default(), "login first");
    // 403 and 3xx pass through, Set-Cookie included.
    let resp = c
        .get(format!("https://a.test:{}/echo", env.https))
        .header("cookie", "session=banned")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["set-cookie"], "flagged=1; Path=/");
    assert_eq!(resp.text().await.unwrap_or_default(), "banned");
    let (status, h, _) = get(&c, &env, "a.test", &[("cookie", "session=moved")]).await;
    assert_eq!(
        (status, h["location"].to_str().unwrap_or_default()),
        (302, "/elsewhere")
    );
    // A slow or absent service: 503, never an open door.
    let started = Instant::now();
    assert_eq!(
        get(&c, &env, "a.test", &[("cookie", "session=slow")])
            .await
            .0,
        503
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        get(&c, &env, "up.test", &[("cookie", "session=good")])
            .await
            .0,
        503
    );
    assert_eq!(a.hits(), 1, "nothing unverified reached the app");

    // A WebSocket is checked like any request.
    let refused = env.ws_connect("a.test", "/ws").await;
    assert!(
        matches!(&refused, Err(common::WsError::Http(r)) if r.status() == 401),
        "{refused:?}"
    );
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("wss://a.test:{}/ws", env.https),
    )
    .expect("request");
    req.headers_mut()
        .insert("cookie", "session=good".parse().expect("cookie"));
    let (mut ws, _) = env.ws_connect_request(req).await.expect("websocket");
    ws.send(tokio_tungstenite::tungstenite::Message::text("hi"))
        .await
        .expect("send");
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("frame");
    assert_eq!(reply.into_text().expect("text").as_str(), "echo: hi");

    env.metrics_until("reasons not counted", |text| {
        let n = |reason: &str| {
            sample(
                text,
                &format!("gateway_rejected_total{{reason=\"{reason}\",route=\"a.test\"}}"),
            )
        };
        n("forbidden") == Some(1.0) && n("auth_unavailable") == Some(1.0) && n("auth") >= Some(3.0)
    })
    .await;
    assert!(gw
        .log_text()
        .contains("event=forward_auth_unavailable route=up.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_never_blocks_the_workers() {
    const LOGINS: usize = 200;
    let a = Upstream::start("A").await;
    let env = Env::new();
    let hash = hash_password("right");
    // Failed logins are not limited here: every request costs a real verification.
    let auth =
        format!("    basic_auth: {{ users: {{ alice: \"{hash}\" }} }}\n    auth_failures: off\n");
    let routes = route("a.test", &a, &auth) + &route("up.test", &a, "");
    let _gw = env.start(&config(&env, "", &routes));
    // The logins, all at once on one HTTP/2 connection (cheap for the test to send).
    let c = client(&env, &["a.test"], true);
    let url = format!("https://a.test:{}/echo", env.https);
    let logins: Vec<_> = (0..LOGINS)
        .map(|i| {
            let (c, url) = (c.clone(), url.clone());
            let creds = basic("alice", &format!("wrong-{i}"));
            tokio::spawn(async move {
                c.get(url)
                    .header("authorization", creds)
                    // 200 verifications at nice 10 take about a minute on one CPU kept
                    // busy (`tests/under-load`); their time is not what is measured.
                    .timeout(Duration::from_secs(300))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    // Once the burst has landed (half of it waiting for its verification), health
    // requests to a public route, on a thread and runtime of their own so that the
    // test's own work never delays them, until every login is answered.
    env.metrics_until("the logins never arrived", |text| {
        sample(text, r#"gateway_in_flight_requests{route="a.test"}"#)
            .is_some_and(|n| n >= (LOGINS / 2) as f64)
    })
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let health = {
        let (stop, c) = (stop.clone(), client(&env, &["up.test"], false));
        let url = format!("https://up.test:{}/echo", env.https);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut latencies = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sent = Instant::now();
                    let status = c.get(&url).send().await.map(|r| r.status().as_u16());
                    latencies.push((sent.elapsed(), status.ok()));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                latencies
            })
        })
    };
    let mut answers = Vec::new();
    for t in logins {
        answers.push(t.await.expect("join").expect("login answered"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let probes = health.join().expect("health thread");
    let slowest = probes.iter().map(|(d, _)| *d).max().unwrap_or_default();
    let mut sorted: Vec<_> = probes.iter().map(|(d, _)| *d).collect();
    sorted.sort();
    eprintln!(
        "{LOGINS} logins: {} answered 401, {} 503; {} health requests meanwhile: p50 {:?}, p99 {:?}, max {slowest:?}",
        answers.iter().filter(|s| **s == 401).count(),
        answers.iter().filter(|s| **s == 503).count(),
        probes.len(),
        sorted.get(sorted.len() / 2),
        sorted.get(sorted.len() * 99 / 100),
    );
    assert!(
        answers.iter().all(|s| *s == 401 || *s == 503),
        "{answers:?}"
    );
    assert!(probes.iter().all(|(_, s)| *s == Some(200)), "{probes:?}");
    assert!(
        probes.len() >= 5,
        "the logins ended before they could be measured against"
    );
    // The workers stayed free: a public request never waited behind the hashing (on
    // one CPU shared with a busy loop, the scheduler alone delays one by up to about
    // 120 ms; a request behind a queue of verifications would wait seconds).
    assert!(
        slowest < Duration::from_millis(250),
        "slowest health request {slowest:?}"
    );
}
