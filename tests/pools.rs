//! Issue 14 against the real binary: several replicas of an app behind one route. Each
//! replica is a real HTTP server in its own process (`common/replica.py`), killed by PID
//! and started again as a crashed GPU app would be.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::replica::Replica;
use common::{client, sample, Env, Upstream};
use futures_util::{SinkExt, StreamExt};

/// The name of the replica that answered (every replica body starts with it).
async fn who(resp: reqwest::Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The `name=value` of the sticky cookie an answer sets.
fn pinning_cookie(resp: &reqwest::Response) -> String {
    resp.headers()["set-cookie"]
        .to_str()
        .expect("text")
        .split(';')
        .next()
        .expect("pair")
        .to_string()
}

fn replicas(env: &Env, names: &[&str]) -> Vec<Replica> {
    names
        .iter()
        .map(|n| Replica::start(n, env.dir.path()))
        .collect()
}

/// Replicas `names` behind route `host` with the route keys `keys` (each line indented
/// for the route): the replicas, the gateway and a client.
fn pool(
    env: &Env,
    host: &str,
    names: &[&str],
    keys: &str,
) -> (Vec<Replica>, common::Gateway, reqwest::Client) {
    let apps = replicas(env, names);
    let routes = format!(
        "routes:\n  - host: {host}\n    upstream: {}\n{keys}",
        list(&apps)
    );
    let gw = env.start(&format!("{}{routes}", env.listen_and_tls()));
    (apps, gw, client(env, &[host], false))
}

fn list(replicas: &[Replica]) -> String {
    let addrs: Vec<String> = replicas.iter().map(|r| r.addr.to_string()).collect();
    format!("[{}]", addrs.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly_and_least_conn_prefers_the_idle_replica() {
    let env = Env::new();
    let apps = replicas(&env, &["r0", "r1", "r2"]);
    let pair = replicas(&env, &["l0", "l1"]);
    let routes = format!(
        "routes:
  - host: rr.apps.test
    upstream: {}
    balance: round_robin
    sticky: off
  - host: lc.apps.test
    upstream: {}
    sticky: off
",
        list(&apps),
        list(&pair)
    );
    let _gw = env.start(&format!("{}{routes}", env.listen_and_tls()));
    let c = client(&env, &["rr.apps.test", "lc.apps.test"], false);

    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let resp = c
            .get(format!("https://rr.apps.test:{}/", env.https))
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 200);
        *counts.entry(who(resp).await).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n == 10), "round robin: {counts:?}");

    // One slow request holds a replica; the quick ones all go to the idle one.
    let slow = {
        let c = c.clone();
        let url = format!("https://lc.apps.test:{}/slow?ms=3000", env.https);
        tokio::spawn(async move { who(c.get(url).send().await.expect("slow")).await })
    };
    // Wait until the slow request is in flight on its replica.
    env.metrics_until("the slow request in flight", |t| {
        t.lines().any(|l| {
            l.starts_with("gateway_upstream_in_flight{route=\"lc.apps.test\"") && l.ends_with(" 1")
        })
    })
    .await;
    let mut quick = Vec::new();
    for _ in 0..6 {
        let resp = c
            .get(format!("https://lc.apps.test:{}/", env.https))
            .send()
            .await
            .expect("get");
        quick.push(who(resp).await);
    }
    let busy = slow.await.expect("slow task");
    assert!(
        quick.iter().all(|w| *w != busy && w.starts_with('l')),
        "least_conn sent quick requests to the busy replica {busy}: {quick:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_is_ejected_without_failing_requests_and_noticed_when_back() {
    let env = Env::new();
    let keys = "    sticky: off
    health: { path: /health, interval: 500ms, timeout: 400ms, unhealthy_after: 2, healthy_after: 2 }
";
    let (mut apps, gw, c) = pool(&env, "kill.apps.test", &["k0", "k1"], keys);
    let url = format!("https://kill.apps.test:{}/", env.https);

    // Six clients in a loop for 10 s; k1 is killed after 2 s.
    let started = Instant::now();
    let run_for = Duration::from_secs(10);
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..6 {
        let (c, url, ok) = (c.clone(), url.clone(), ok.clone());
        clients.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            while started.elapsed() < run_for {
                let at = started.elapsed();
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failed.push((at, r.status().to_string())),
                    Err(e) => failed.push((at, e.to_string())),
                }
            }
            failed
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = started.elapsed();
    apps[1].kill();
    let mut failed = Vec::new();
    for client in clients {
        failed.extend(client.await.expect("client"));
    }
    // A request the app never saw (a refused connect) is retried on k0: none fails. One
    // in progress on k1 at the kill may (the app died under it): at most one per client,
    // and only at the kill.
    let late: Vec<_> = failed
        .iter()
        .filter(|(at, _)| *at > killed_at + Duration::from_millis(500))
        .collect();
    assert!(
        late.is_empty(),
        "failed after the first health interval: {late:?}"
    );
    assert!(failed.len() <= 6, "failed at the kill: {failed:?}");
    eprintln!(
        "kill: {} ok, {} failed at the kill ({failed:?})",
        ok.load(Ordering::Relaxed),
        failed.len()
    );
    let k1 = format!(
        "gateway_upstream_up{{route=\"kill.apps.test\",upstream=\"{}\"}}",
        apps[1].addr
    );
    let text = env
        .metrics_until("k1 down", |t| sample(t, &k1) == Some(0.0))
        .await;
    assert!(sample(
        &text,
        "gateway_upstream_errors_total{kind=\"connect\",route=\"kill.apps.test\"}"
    )
    .is_some_and(|n| n >= 1.0));
    assert_eq!(
        gw.log_text()
            .matches(&format!(
                "event=upstream_down route=kill.apps.test upstream={}",
                apps[1].addr
            ))
            .count(),
        1,
        "one log line for the change"
    );

    // Back: two good checks bring it in again, and it takes requests.
    apps[1].restart();
    env.metrics_until("k1 back up", |t| sample(t, &k1) == Some(1.0))
        .await;
    let mut seen_k1 = false;
    for _ in 0..10 {
        let resp = c.get(&url).send().await.expect("get");
        seen_k1 |= who(resp).await == "k1";
    }
    assert!(seen_k1, "k1 takes requests again");
    assert!(gw.log_text().contains(&format!(
        "event=upstream_up route=kill.apps.test upstream={} reason=\"health check passed\"",
        apps[1].addr
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_ejects_a_replica_and_good_ones_bring_it_back() {
    let env = Env::new();
    let keys = "    sticky: off
    health: { path: /health, interval: 200ms, timeout: 150ms, unhealthy_after: 2, healthy_after: 3 }
";
    let (apps, _gw, c) = pool(&env, "health.apps.test", &["h0", "h1"], keys);
    let h1 = format!(
        "gateway_upstream_up{{route=\"health.apps.test\",upstream=\"{}\"}}",
        apps[1].addr
    );
    env.metrics_until("h1 up", |t| sample(t, &h1) == Some(1.0))
        .await;
    apps[1].fail_health(true);
    env.metrics_until("h1 ejected", |t| sample(t, &h1) == Some(0.0))
        .await;
    for _ in 0..10 {
        let resp = c
            .get(format!("https://health.apps.test:{}/", env.https))
            .send()
            .await
            .expect("get");
        assert_eq!(who(resp).await, "h0", "an ejected replica gets no requests");
    }
    apps[1].fail_health(false);
    env.metrics_until("h1 back", |t| sample(t, &h1) == Some(1.0))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookies_keep_a_client_and_gradio_pairs_on_one_replica() {
    let env = Env::new();
    let keys = "    balance: round_robin
";
    let (apps, _gw, c) = pool(&env, "sticky.apps.test", &["s0", "s1", "s2"], keys);
    let base = format!("https://sticky.apps.test:{}", env.https);
    // A browser's first request (Fetch Metadata, no cookie) is balanced and pinned.
    let browser = |path: &str| {
        c.get(format!("{base}{path}"))
            .header("sec-fetch-mode", "navigate")
    };

    let first = browser("/").send().await.expect("first");
    let set_cookie = first
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("the first answer pins the client")
        .to_string();
    assert!(
        set_cookie.contains("; Path=/; HttpOnly; Secure; SameSite=Lax"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().expect("pair").to_string();
    let pinned = who(first).await;
    for i in 0..100 {
        let resp = browser("/")
            .header("cookie", &cookie)
            .send()
            .await
            .expect("get");
        assert!(
            resp.headers().get("set-cookie").is_none(),
            "a pinned client is not re-pinned"
        );
        assert_eq!(who(resp).await, pinned, "request {i} left its replica");
    }

    // Gradio's queue: join, then the event stream, each new browser on one replica, and
    // the browsers spread over the replicas.
    let mut used = std::collections::HashSet::new();
    for i in 0..9 {
        let join = c
            .post(format!("{base}/queue/join"))
            .header("sec-fetch-mode", "cors")
            .body("{}")
            .send()
            .await
            .expect("join");
        let cookie = join
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("pinned by the join")
            .to_string();
        let joined = who(join).await;
        let data = c
            .get(format!("{base}/queue/data"))
            .header("sec-fetch-mode", "cors")
            .header("cookie", &cookie)
            .send()
            .await
            .expect("data");
        assert_eq!(data.headers()["content-type"], "text/event-stream");
        let events = data.text().await.expect("events");
        assert_eq!(
            events.matches(&format!("data: {joined} ")).count(),
            3,
            "pair {i}: {events}"
        );
        used.insert(joined);
    }
    assert_eq!(used.len(), 3, "new browsers are balanced: {used:?}");

    // A client without cookies or Fetch Metadata (an API client) sticks by its address.
    let mut api = std::collections::HashSet::new();
    for _ in 0..20 {
        let resp = c
            .post(format!("{base}/queue/join"))
            .body("{}")
            .send()
            .await
            .expect("api");
        api.insert(who(resp).await);
    }
    assert_eq!(api.len(), 1, "an API client stays on one replica: {api:?}");
    drop(apps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_pinned_replica_moves_the_client_and_rewrites_its_cookie() {
    let env = Env::new();
    let (mut apps, _gw, c) = pool(&env, "move.apps.test", &["d0", "d1"], "");
    let url = format!("https://move.apps.test:{}/", env.https);
    let first = c
        .get(&url)
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .expect("first");
    let cookie = pinning_cookie(&first);
    let pinned = who(first).await;
    let index = apps
        .iter()
        .position(|r| r.name == pinned)
        .expect("a replica");
    apps[index].kill();
    let other = &apps[1 - index].name;
    let resp = c
        .get(&url)
        .header("cookie", &cookie)
        .send()
        .await
        .expect("moved");
    assert_eq!(
        resp.status(),
        200,
        "the refused connect is retried on the other replica"
    );
    let moved = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    assert_eq!(&who(resp).await, other);
    let moved = moved.expect("the cookie is rewritten");
    assert_ne!(moved.split(';').next(), Some(cookie.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_queues_in_order_then_refuses_with_retry_after() {
    let env = Env::new();
    let apps = replicas(&env, &["q0"]);
    let routes = format!(
        "routes:
  - host: queue.apps.test
    upstream: {}
    max_concurrent: 1
    queue: {{ size: 2, timeout: 20s }}
  - host: wait.apps.test
    upstream: {}
    max_concurrent: 1
    queue: {{ size: 5, timeout: 1s }}
",
        list(&apps),
        list(&apps)
    );
    let _gw = env.start(&format!("{}{routes}", env.listen_and_tls()));
    let c = client(&env, &["queue.apps.test", "wait.apps.test"], false);
    let depth = |route: &str| format!("gateway_queue_depth{{route=\"{route}\"}}");
    let in_flight = |route: &str| {
        format!(
            "gateway_upstream_in_flight{{route=\"{route}\",upstream=\"{}\"}}",
            apps[0].addr
        )
    };

    // 1st holds the slot; 2nd and 3rd wait, in that order; 4th is turned away at once.
    let finished = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (c, finished) = (c.clone(), finished.clone());
        // Long enough that the 1st still holds its slot when the 4th comes, however
        // slowly this machine gets the three into place.
        let url = format!("https://queue.apps.test:{}/slow?ms=3000", env.https);
        tasks.push(tokio::spawn(async move {
            let status = c.get(url).send().await.expect("queued").status();
            finished.lock().expect("lock").push(i);
            status
        }));
        // Each is in place before the next is sent, so that their order is known.
        env.metrics_until("queued in order", |t| match i {
            0 => sample(t, &in_flight("queue.apps.test")) == Some(1.0),
            _ => sample(t, &depth("queue.apps.test")) == Some(i as f64),
        })
        .await;
    }
    let fourth = c
        .get(format!("https://queue.apps.test:{}/", env.https))
        .send()
        .await
        .expect("4th");
    assert_eq!(fourth.status(), 503);
    assert!(
        finished.lock().expect("lock").is_empty(),
        "refused at once, not after a slot freed"
    );
    let retry = fourth.headers()["retry-after"]
        .to_str()
        .expect("text")
        .parse::<u64>()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(fourth.text().await.expect("page").contains("busy"));
    for t in tasks {
        assert_eq!(t.await.expect("task"), 200);
    }
    assert_eq!(
        *finished.lock().expect("lock"),
        [0, 1, 2],
        "served in order"
    );

    // A request that waits past queue.timeout is turned away.
    let hold = {
        let c = c.clone();
        let url = format!("https://wait.apps.test:{}/slow?ms=3000", env.https);
        tokio::spawn(async move { c.get(url).send().await.expect("hold").status() })
    };
    env.metrics_until("the slot taken", |t| {
        sample(t, &in_flight("wait.apps.test")) == Some(1.0)
    })
    .await;
    let started = Instant::now();
    let late = c
        .get(format!("https://wait.apps.test:{}/", env.https))
        .send()
        .await
        .expect("late");
    let waited = started.elapsed();
    assert_eq!(late.status(), 503);
    assert!(late.headers().contains_key("retry-after"));
    // It waited (tokio's timer never fires early); had it waited for the slot instead,
    // it would have been a 200.
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert_eq!(hold.await.expect("hold"), 200);
    let text = env
        .metrics_until("queue rejections counted", |t| {
            sample(
                t,
                "gateway_rejected_total{reason=\"queue_timeout\",route=\"wait.apps.test\"}",
            ) == Some(1.0)
        })
        .await;
    assert_eq!(
        sample(
            &text,
            "gateway_rejected_total{reason=\"queue_full\",route=\"queue.apps.test\"}"
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, &depth("queue.apps.test")), Some(0.0));
    assert_eq!(
        sample(
            &text,
            "gateway_queue_wait_seconds_count{route=\"queue.apps.test\"}"
        ),
        Some(3.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_down_is_a_503_page_with_retry_after() {
    let env = Env::new();
    let closed: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", common::free_port()))
        .collect();
    let routes = format!(
        "routes:
  - host: down.test
    upstream: [{}]
",
        closed.join(", ")
    );
    let gw = env.start(&format!("{}{routes}", env.listen_and_tls()));
    let c = client(&env, &["down.test"], false);
    for _ in 0..3 {
        let resp = c
            .get(format!("https://down.test:{}/", env.https))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_text()));
        assert_eq!(resp.status(), 503);
        assert!(resp.headers().contains_key("retry-after"));
        let page = resp.text().await.expect("page");
        assert!(page.contains("starting or down"), "{page}");
        assert!(!page.contains("127.0.0.1"), "no internal address: {page}");
    }
    let text = env
        .metrics_until("both down", |t| {
            closed.iter().all(|a| {
                sample(
                    t,
                    &format!("gateway_upstream_up{{route=\"down.test\",upstream=\"{a}\"}}"),
                ) == Some(0.0)
            })
        })
        .await;
    assert!(sample(
        &text,
        "gateway_rejected_total{reason=\"upstream_down\",route=\"down.test\"}"
    )
    .is_some_and(|n| n >= 1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adding_a_replica_keeps_a_websocket_on_the_old_one_and_removing_it_drains() {
    let env = Env::new();
    let old = Upstream::start("old").await;
    let new = Upstream::start("new").await;
    let config = |ups: &str| {
        format!(
            "{}routes:\n  - host: ws.apps.test\n    upstream: {ups}\n    sticky: off\n",
            env.listen_and_tls()
        )
    };
    let _gw = env.start(&config(&format!("[{}]", old.addr)));
    let (mut ws, _) = env
        .ws_connect("ws.apps.test", "/ws")
        .await
        .expect("websocket");
    ws.send("before".into()).await.expect("send");
    let echo = ws.next().await.expect("echo").expect("frame");
    assert_eq!(echo.into_text().expect("text"), "echo: before");

    env.write_config(&config(&format!("[{}, {}]", old.addr, new.addr)));
    let reload = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/-/reload", env.metrics))
        .send()
        .await
        .expect("reload");
    assert_eq!(reload.status(), 200);
    // The new replica takes requests (least_conn: the old one holds the WebSocket).
    let c = client(&env, &["ws.apps.test"], false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while new.hits_on("/echo") == 0 {
        assert!(
            Instant::now() < deadline,
            "the added replica got no request"
        );
        let _ = c
            .get(format!("https://ws.apps.test:{}/echo", env.https))
            .send()
            .await;
    }
    ws.send("after".into())
        .await
        .expect("send after the reload");
    let echo = ws.next().await.expect("echo").expect("frame");
    assert_eq!(echo.into_text().expect("text"), "echo: after");
    let text = env.metrics_get("/metrics").await.1;
    let up = |a: std::net::SocketAddr| {
        sample(
            &text,
            &format!("gateway_upstream_up{{route=\"ws.apps.test\",upstream=\"{a}\"}}"),
        )
    };
    assert_eq!((up(old.addr), up(new.addr)), (Some(1.0), Some(1.0)));

    // The old replica removed: its WebSocket goes on (it drains), new requests go to the
    // new one, and its series go once the WebSocket is closed.
    env.write_config(&config(&format!("[{}]", new.addr)));
    let reload = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/-/reload", env.metrics))
        .send()
        .await
        .expect("reload");
    assert_eq!(reload.status(), 200);
    let before = old.hits_on("/echo");
    for _ in 0..5 {
        let resp = c
            .get(format!("https://ws.apps.test:{}/echo", env.https))
            .send()
            .await
            .expect("echo");
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        old.hits_on("/echo"),
        before,
        "a removed replica gets no new request"
    );
    ws.send("draining".into())
        .await
        .expect("send while draining");
    let echo = ws.next().await.expect("echo").expect("frame");
    assert_eq!(echo.into_text().expect("text"), "echo: draining");
    drop(ws);
    let gone = format!("upstream=\"{}\"", old.addr);
    env.metrics_until("the drained replica's series removed", |t| {
        !t.contains(&gone)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_the_queue_gives_up_its_place_and_never_reaches_the_app() {
    let app = Upstream::start("q").await;
    let env = Env::new();
    let routes = format!(
        "routes:\n  - host: leave.apps.test\n    upstream: {}\n    max_concurrent: 1\n    queue: {{ size: 5, timeout: 30s }}\n",
        app.addr
    );
    let _gw = env.start(&format!("{}{routes}", env.listen_and_tls()));
    let c = client(&env, &["leave.apps.test"], false);
    let depth = "gateway_queue_depth{route=\"leave.apps.test\"}";
    // One request holds the only slot for 12 s: long enough for the rest of the test to
    // happen while it runs, however slow the machine.
    let hold = {
        let url = format!("https://leave.apps.test:{}/slow?ms=12000", env.https);
        tokio::spawn(async move { c.get(url).send().await.expect("hold").status() })
    };
    app.wait_for("/slow", 1).await;

    // HTTP/1.1, no body: queued, then the connection closed.
    let socket = {
        tokio::task::spawn_blocking({
            let s = env.tls_connect("leave.apps.test");
            move || {
                use std::io::Write;
                let mut s = s;
                s.write_all(b"GET /echo?h1 HTTP/1.1\r\nHost: leave.apps.test\r\n\r\n")
                    .expect("write");
                s
            }
        })
        .await
        .expect("write task")
    };
    env.metrics_until("the HTTP/1.1 request queued", |t| {
        sample(t, depth) == Some(1.0)
    })
    .await;
    drop(socket);
    env.metrics_until("its place given up", |t| sample(t, depth) == Some(0.0))
        .await;

    // HTTP/2: queued, then the stream reset (the client drops the request).
    let mut h2 = env.h2_connect("leave.apps.test").await;
    let req = http::Request::get(format!("https://leave.apps.test:{}/echo?h2", env.https))
        .body(())
        .expect("request");
    let (answer, _) = h2.send_request(req, true).expect("send");
    env.metrics_until("the HTTP/2 request queued", |t| {
        sample(t, depth) == Some(1.0)
    })
    .await;
    drop(answer);
    env.metrics_until("its place given up", |t| sample(t, depth) == Some(0.0))
        .await;

    assert!(!hold.is_finished(), "both left before the slot was free");
    assert_eq!(hold.await.expect("hold"), 200);
    assert_eq!(
        app.hits_on("/echo"),
        0,
        "the app never got a request of a client gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_browser_opens_its_websockets_on_its_own_replica() {
    // Streamlit: the page, then its WebSocket; both must reach the replica holding the
    // session.
    let apps = [Upstream::start("w0").await, Upstream::start("w1").await];
    let env = Env::new();
    let routes = format!(
        "routes:\n  - host: stream.apps.test\n    upstream: [{}, {}]\n    balance: round_robin\n",
        apps[0].addr, apps[1].addr
    );
    let _gw = env.start(&format!("{}{routes}", env.listen_and_tls()));
    let c = client(&env, &["stream.apps.test"], false);
    for round in 0..4 {
        let page = c
            .get(format!("https://stream.apps.test:{}/echo", env.https))
            .header("sec-fetch-mode", "navigate")
            .send()
            .await
            .expect("page");
        let cookie = pinning_cookie(&page);
        let body: serde_json::Value = page.json().await.expect("json");
        let pinned = usize::from(body["upstream"] == "w1");
        let before = [apps[0].hits_on("/ws"), apps[1].hits_on("/ws")];
        for _ in 0..3 {
            let mut req =
                tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                    format!("wss://stream.apps.test:{}/ws", env.https),
                )
                .expect("request");
            req.headers_mut()
                .insert("cookie", cookie.parse().expect("cookie"));
            req.headers_mut()
                .insert("sec-fetch-mode", "websocket".parse().expect("mode"));
            let (mut ws, _) = env.ws_connect_request(req).await.expect("websocket");
            ws.send("hi".into()).await.expect("send");
            let echo = ws.next().await.expect("echo").expect("frame");
            assert_eq!(echo.into_text().expect("text"), "echo: hi");
        }
        assert_eq!(
            apps[pinned].hits_on("/ws"),
            before[pinned] + 3,
            "round {round}"
        );
        assert_eq!(
            apps[1 - pinned].hits_on("/ws"),
            before[1 - pinned],
            "round {round}"
        );
    }
    // Round robin placed the four browsers on both replicas.
    assert!(apps.iter().all(|a| a.hits_on("/ws") > 0));
}
