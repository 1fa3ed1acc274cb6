//! Issue 29 against the real binary: apps started on demand and stopped when idle: the
//! cold start and its waiting page, the idle stop, failed and slow starts, streams and
//! WebSockets that keep an app. Each app is a real process the gateway starts
//! (`common/ondemand.py`). Sharing a GPU's memory: `on_demand_memory.rs`; reloads and
//! upgrades: `on_demand_reload.rs`.

mod common;

use std::time::{Duration, Instant};

use common::on_demand::{alive, cli, config, hex, until, Cleanup, TestApp};
use common::{client, free_port, sample, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cold_app_holds_requests_and_shows_browsers_a_waiting_page() {
    let env = Env::new();
    let voice = TestApp::new(&env, "voice");
    let _cleanup = Cleanup(voice.dir.clone());
    let mut gw = env.start(&config(
        &env,
        &[voice.entry(1.5, "")],
        &[voice.route("a.test")],
        "",
    ));
    let c = client(&env, &["a.test"], false);
    assert!(!voice.running(), "started before any request");
    // A browser's navigation: the waiting page at once.
    let asked = Instant::now();
    let page = c
        .get(format!("https://a.test:{}/", env.https))
        .header("sec-fetch-mode", "navigate")
        .header("accept", "text/html")
        .send()
        .await
        .expect("page");
    let took = asked.elapsed();
    assert_eq!(page.status(), 503);
    assert_eq!(page.headers()["retry-after"], "2");
    let html = page.text().await.expect("html");
    assert!(
        html.contains("voice is") && html.contains("http-equiv=\"refresh\""),
        "{html}"
    );
    // The first request of this client: its TLS handshake is in this time too.
    assert!(took < Duration::from_secs(1), "waiting page took {took:?}");
    // An API call is held until the app serves, then answered by it.
    let held = c
        .post(format!("https://a.test:{}/upload", env.https))
        .body(vec![7u8; 1 << 20])
        .send()
        .await
        .expect("held POST");
    assert_eq!(held.status(), 200);
    let digest = held.text().await.expect("digest");
    let expected = {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(vec![7u8; 1 << 20]))
    };
    assert_eq!(digest, expected);
    assert!(voice.running());
    // Warm now: the navigation gets the app's own page.
    let page = c
        .get(format!("https://a.test:{}/", env.https))
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    assert!(page
        .text()
        .await
        .expect("html")
        .contains("hello from voice"));
    let (_, metrics) = env.metrics_get("/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "gateway_app_starts_total{app=\"voice\",result=\"ok\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "gateway_app_state{app=\"voice\",state=\"ready\"}"),
        Some(1.0)
    );
    assert!(gw.errors_logged().is_empty(), "{}", gw.log_text());
    // SIGTERM of the gateway stops the app it runs.
    let pid = voice.pid().expect("pid");
    gw.signal(libc::SIGTERM);
    gw.wait_exit(Duration::from_secs(20)).expect("gateway exit");
    assert!(!alive(pid), "the app outlived the gateway");
    let log = gw.log_text();
    assert!(
        log.contains("event=app_stop app=voice reason=exit"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_app_stops_and_the_next_request_starts_it_again() {
    let env = Env::new();
    let voice = TestApp::new(&env, "voice");
    let _cleanup = Cleanup(voice.dir.clone());
    let _gw = env.start(&config(
        &env,
        &[voice.entry(0.2, "    idle_stop: 2s\n    stop_timeout: 2s\n    wake: { ignore_user_agents: [UptimeRobot] }\n")],
        &[voice.route("a.test")],
        "",
    ));
    let c = client(&env, &["a.test"], false);
    let url = format!("https://a.test:{}/x", env.https);
    // A monitor neither starts it…
    let monitor = c
        .get(&url)
        .header("user-agent", "UptimeRobot/2.0")
        .send()
        .await
        .expect("monitor");
    assert_eq!(monitor.status(), 503);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!voice.running(), "a monitor started the app");
    // …a request does.
    assert_eq!(c.get(&url).send().await.expect("get").status(), 200);
    let first = voice.pid().expect("pid");
    // An SSE stream with 3 s between events outlives idle_stop: 2s.
    let stream = c
        .get(format!("https://a.test:{}/sse?every=3&count=2", env.https))
        .send()
        .await
        .expect("sse");
    let body = stream.text().await.expect("events");
    assert!(body.contains("voice 1"), "{body}");
    assert_eq!(voice.pid(), Some(first), "stopped under a stream");
    // Then idle: stopped about 2 s later.
    let ended = Instant::now();
    until("the idle stop", Duration::from_secs(10), || !alive(first)).await;
    let idle = ended.elapsed();
    assert!(
        idle >= Duration::from_millis(1500),
        "stopped after {idle:?}"
    );
    // The next request starts it again: curl's POST is held, then answered by the app.
    let body = env.path("body.bin");
    std::fs::write(&body, vec![5u8; 64 << 10]).expect("body");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-o", "-", "-w", " %{http_code}", "--cacert"])
        .arg(env.path("certs/default.pem"))
        .arg("--resolve")
        .arg(format!("a.test:{}:127.0.0.1", env.https))
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("https://a.test:{}/upload", env.https))
        .output()
        .await
        .expect("curl");
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    let expected = {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(vec![5u8; 64 << 10]))
    };
    assert_eq!(
        answer,
        format!("{expected} 200"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = voice.pid().expect("pid");
    assert_ne!(first, second);
    let (_, metrics) = env.metrics_get("/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "gateway_app_stops_total{app=\"voice\",reason=\"idle\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "gateway_app_starts_total{app=\"voice\",result=\"ok\"}"
        ),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_start_is_a_502_with_its_reason_then_retried_after_the_backoff() {
    let env = Env::new();
    let voice = TestApp::new(&env, "voice");
    let _cleanup = Cleanup(voice.dir.clone());
    std::fs::write(voice.dir.join("voice.fail"), "").expect("fail file");
    let _gw = env.start(&config(
        &env,
        &[voice.entry(0.2, "")],
        &[voice.route("a.test")],
        "",
    ));
    let c = client(&env, &["a.test"], false);
    let url = format!("https://a.test:{}/x", env.https);
    let failed = c.get(&url).send().await.expect("get");
    assert_eq!(failed.status(), 502);
    let retry: u64 = failed.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    let text = failed.text().await.expect("page");
    assert!(text.contains("exited with status 3"), "{text}");
    assert!(
        text.contains("cannot load the model"),
        "the app's last log line: {text}"
    );
    // Within the backoff: the same answer, no new start.
    assert_eq!(c.get(&url).send().await.expect("get").status(), 502);
    std::fs::remove_file(voice.dir.join("voice.fail")).expect("fixed");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(c.get(&url).send().await.expect("get").status(), 200);
    // The operator's view and hand.
    let pid = voice.pid().expect("pid");
    let table = cli(&env, &["apps"]);
    let line = table
        .lines()
        .find(|l| l.starts_with("voice "))
        .unwrap_or_default();
    assert!(
        line.contains(" ready ") && line.contains(&pid.to_string()),
        "{table}"
    );
    let stopped = cli(&env, &["apps", "stop", "voice"]);
    assert!(stopped.contains("voice: stopping"), "{stopped}");
    until("the operator's stop", Duration::from_secs(10), || {
        !alive(pid)
    })
    .await;
    let (_, metrics) = env.metrics_get("/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "gateway_app_stops_total{app=\"voice\",reason=\"operator\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "gateway_app_starts_total{app=\"voice\",result=\"failed\"}"
        ),
        Some(1.0)
    );
    let (status, report) = env.metrics_get("/-/apps").await;
    assert_eq!(status, 200);
    assert!(report.contains("\"state\":\"stopped\""), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_timeout_is_a_504_and_max_waiting_a_503() {
    let env = Env::new();
    let slow = TestApp::new(&env, "slow");
    let _cleanup = Cleanup(slow.dir.clone());
    let _gw = env.start(&config(
        &env,
        &[slow.entry(
            30.0,
            "    start_timeout: 6s\n    stop_timeout: 1s\n    max_waiting: 2\n",
        )],
        &[slow.route("a.test")],
        "",
    ));
    let c = client(&env, &["a.test"], false);
    let url = format!("https://a.test:{}/x", env.https);
    let held: Vec<_> = (0..2).map(|_| tokio::spawn(c.get(&url).send())).collect();
    until("two held", Duration::from_secs(5), || slow.running()).await;
    let c2 = c.clone();
    let url2 = url.clone();
    // Metrics say when both are held.
    env.metrics_until("two waiting", |m| {
        sample(m, "gateway_app_waiting{app=\"slow\"}") == Some(2.0)
    })
    .await;
    let over = c2.get(&url2).send().await.expect("third");
    assert_eq!(over.status(), 503);
    for h in held {
        let resp = h.await.expect("task").expect("resp");
        assert_eq!(resp.status(), 504);
        assert_eq!(resp.headers()["retry-after"], "5");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_websocket_lets_its_app_go_idle_and_is_closed_with_1001() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;
    let env = Env::new();
    let voice = TestApp::new(&env, "voice");
    let _cleanup = Cleanup(voice.dir.clone());
    let _gw = env.start(&config(
        &env,
        &[voice.entry(0.2, "    idle_stop: 3s\n")],
        &[voice.route("a.test")],
        "",
    ));
    let c = client(&env, &["a.test"], false);
    assert_eq!(
        c.get(format!("https://a.test:{}/", env.https))
            .send()
            .await
            .expect("start")
            .status(),
        200
    );
    let pid = voice.pid().expect("pid");
    let (mut ws, _) = env.ws_connect("a.test", "/ws").await.expect("websocket");
    // Messages keep it in use…
    for i in 0..4 {
        ws.send(Message::text(format!("m{i}"))).await.expect("send");
        let got = ws.next().await.expect("frame").expect("message");
        assert_eq!(
            got.into_text().expect("text").as_str(),
            format!("voice: m{i}")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(alive(pid), "stopped while its WebSocket was busy");
    // …silence does not: the app stops and the WebSocket closes with 1001.
    let closed = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("closed within 10 s");
    match closed {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    until("the idle stop", Duration::from_secs(10), || !alive(pid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_requests_during_one_cold_start_all_succeed() {
    use futures_util::{SinkExt, StreamExt};
    use sha2::Digest;
    use tokio_tungstenite::tungstenite::Message;
    let env = Env::new();
    let voice = TestApp::new(&env, "voice");
    let _cleanup = Cleanup(voice.dir.clone());
    let _gw = env.start(&config(
        &env,
        &[voice.entry(3.0, "    max_waiting: 300\n")],
        &[voice.route("a.test")],
        "",
    ));
    let c = client(&env, &["a.test"], false);
    let base = format!("https://a.test:{}", env.https);
    let body: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let digest = hex(&sha2::Sha256::digest(&body));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (c, url) = (c.clone(), format!("{base}/get/{i}"));
        tasks.spawn(async move {
            let resp = c
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("GET {i}: {e}"))?;
            match resp.status().as_u16() {
                200 => Ok("get"),
                s => Err(format!("GET {i}: {s}")),
            }
        });
    }
    for i in 0..50 {
        let (c, url, body, digest) = (
            c.clone(),
            format!("{base}/upload"),
            body.clone(),
            digest.clone(),
        );
        tasks.spawn(async move {
            let resp = c
                .post(&url)
                .body(body)
                .send()
                .await
                .map_err(|e| format!("POST {i}: {e}"))?;
            let status = resp.status().as_u16();
            let text = resp.text().await.map_err(|e| format!("POST {i}: {e}"))?;
            match (status, text == digest) {
                (200, true) => Ok("post"),
                _ => Err(format!("POST {i}: {status} {text}")),
            }
        });
    }
    for i in 0..25 {
        let (c, url) = (c.clone(), format!("{base}/sse?every=0.1&count=3"));
        tasks.spawn(async move {
            let resp = c
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("SSE {i}: {e}"))?;
            let text = resp.text().await.map_err(|e| format!("SSE {i}: {e}"))?;
            match text.contains("data: voice 2") {
                true => Ok("sse"),
                false => Err(format!("SSE {i}: {text}")),
            }
        });
    }
    let env = std::sync::Arc::new(env);
    for i in 0..25 {
        let env = env.clone();
        tasks.spawn(async move {
            let (mut ws, _) = env
                .ws_connect("a.test", "/ws")
                .await
                .map_err(|e| format!("WS {i}: {e}"))?;
            ws.send(Message::text(format!("w{i}")))
                .await
                .map_err(|e| format!("WS {i}: {e}"))?;
            let got = ws
                .next()
                .await
                .ok_or(format!("WS {i}: closed"))?
                .map_err(|e| format!("WS {i}: {e}"))?;
            match got.into_text().map(|t| t.to_string()) {
                Ok(text) if text == format!("voice: w{i}") => Ok("ws"),
                other => Err(format!("WS {i}: {other:?}")),
            }
        });
    }
    let mut counts = std::collections::BTreeMap::new();
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done.expect("task") {
            Ok(kind) => *counts.entry(kind).or_insert(0) += 1,
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(counts.values().sum::<i32>(), 200, "{counts:?}");
    let (_, metrics) = env.metrics_get("/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "gateway_app_starts_total{app=\"voice\",result=\"ok\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_while_its_app_stops_is_served_after_a_restart() {
    let env = Env::new();
    let voice = TestApp::new(&env, "voice");
    let _cleanup = Cleanup(voice.dir.clone());
    // The app takes 2 s to exit after SIGTERM.
    let _gw = env.start(&config(
        &env,
        &[voice.entry_stopping(0.2, 2.0, "    idle_stop: 1s\n    stop_timeout: 5s\n")],
        &[voice.route("a.test")],
        "",
    ));
    let c = client(&env, &["a.test"], false);
    let url = format!("https://a.test:{}/x", env.https);
    assert_eq!(c.get(&url).send().await.expect("start").status(), 200);
    let first = voice.pid().expect("pid");
    env.metrics_until("the idle stop under way", |m| {
        sample(m, "gateway_app_state{app=\"voice\",state=\"stopping\"}") == Some(1.0)
    })
    .await;
    assert!(
        alive(first),
        "already gone: the test cannot ask during the stop"
    );
    let resp = c.get(&url).send().await.expect("during the stop");
    assert_eq!(resp.status(), 200);
    assert!(!alive(first));
    let second = voice.pid().expect("pid");
    assert_ne!(first, second, "served by the stopping process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_with_30_s_between_events_keeps_its_app_and_it_stops_10_s_after() {
    let env = Env::new();
    let voice = TestApp::new(&env, "voice");
    let _cleanup = Cleanup(voice.dir.clone());
    let _gw = env.start(&config(
        &env,
        &[voice.entry(0.2, "    idle_stop: 10s\n")],
        &[voice.route("a.test")],
        "",
    ));
    let c = client(&env, &["a.test"], false);
    let stream = c
        .get(format!("https://a.test:{}/sse?every=30&count=2", env.https))
        .send()
        .await
        .expect("sse");
    let pid = voice.pid().expect("pid");
    let body = stream.text().await.expect("both events");
    assert!(body.contains("data: voice 1"), "{body}");
    let ended = Instant::now();
    assert!(alive(pid), "stopped under the stream");
    until("the idle stop", Duration::from_secs(20), || !alive(pid)).await;
    let after = ended.elapsed();
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(13)).contains(&after),
        "stopped {after:?} after the stream ended"
    );
}

/// Issue 29's cold-start figures: over 20 cold starts of an app that loads for 3 s, how
/// long a browser's navigation waits for the waiting page, and the time to first byte
/// of a held request minus the app's own readiness time. A measurement, not a test
/// of the suite (`make cold-start`): it takes a minute and its figure depends on the
/// machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn cold_start_latency() {
    let env = Env::new();
    let voice = TestApp::new(&env, "voice");
    let _cleanup = Cleanup(voice.dir.clone());
    let _gw = env.start(&config(
        &env,
        &[voice.entry(3.0, "")],
        &[voice.route("a.test")],
        "",
    ));
    let c = client(&env, &["a.test"], false);
    let url = format!("https://a.test:{}/x", env.https);
    let mut lags = Vec::new();
    let mut pages = Vec::new();
    // A first request opens the client's connection (its handshake is not timed).
    assert_eq!(
        c.get(&url)
            .header("user-agent", "warm-up")
            .send()
            .await
            .expect("warm-up")
            .status(),
        200
    );
    let pid = voice.pid().expect("pid");
    cli(&env, &["apps", "stop", "voice"]);
    until("the stop", Duration::from_secs(10), || !alive(pid)).await;
    for _ in 0..20 {
        let _ = std::fs::remove_file(voice.dir.join("voice.listening"));
        // A browser's navigation: the waiting page, timed on the open connection.
        let asked = Instant::now();
        let page = c
            .get(format!("https://a.test:{}/", env.https))
            .header("sec-fetch-mode", "navigate")
            .send()
            .await
            .expect("page");
        assert_eq!(page.status(), 503);
        page.bytes().await.expect("page body");
        pages.push(asked.elapsed().as_secs_f64());
        let resp = c.get(&url).send().await.expect("cold");
        let first_byte = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert_eq!(resp.status(), 200);
        let listening = voice.listening_at().expect("listening time");
        lags.push(first_byte - listening);
        let pid = voice.pid().expect("pid");
        cli(&env, &["apps", "stop", "voice"]);
        until("the stop", Duration::from_secs(10), || !alive(pid)).await;
        env.metrics_until("stopped", |m| {
            sample(m, "gateway_app_state{app=\"voice\",state=\"stopped\"}") == Some(1.0)
        })
        .await;
    }
    lags.sort_by(f64::total_cmp);
    pages.sort_by(f64::total_cmp);
    let ms = |s: f64| s * 1000.0;
    eprintln!(
        "waiting page on a cold request: min {:.2} ms, p50 {:.2} ms, max {:.2} ms",
        ms(pages[0]),
        ms(pages[pages.len() / 2]),
        ms(pages[pages.len() - 1])
    );
    assert!(ms(pages[pages.len() - 1]) <= 50.0, "{pages:?}");
    eprintln!(
        "cold start, first byte after the app listens: min {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(lags[0]),
        ms(lags[lags.len() / 2]),
        ms(lags[(lags.len() * 99).div_ceil(100) - 1]),
        ms(lags[lags.len() - 1])
    );
    assert!(ms(lags[lags.len() - 1]) <= 150.0, "{lags:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_command_that_never_gets_ready_is_stopped_with_its_stop_command() {
    let env = Env::new();
    let dir = env.path("apps");
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let app = format!(
        "  svc:\n    start: [/bin/sh, -c, \"touch {0}/started\"]\n    stop: [/bin/sh, -c, \"touch {0}/stopped\"]\n    ready: \"http://127.0.0.1:{port}/\"\n    start_timeout: 1s\n",
        dir.display()
    );
    let route = format!("  - host: a.test\n    upstream: \"127.0.0.1:{port}\"\n    app: svc\n");
    let _gw = env.start(&config(&env, &[app], &[route], ""));
    let c = client(&env, &["a.test"], false);
    let resp = c
        .get(format!("https://a.test:{}/", env.https))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 504);
    assert!(dir.join("started").exists());
    until("the stop command", Duration::from_secs(10), || {
        dir.join("stopped").exists()
    })
    .await;
}
