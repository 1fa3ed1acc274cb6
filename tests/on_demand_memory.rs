//! Issue 29 against the real binary: apps that share a GPU's memory: two too big to run
//! together swap without cutting a request, exclusive groups, kept apps, and a pool whose
//! replicas are apps.

mod common;

use std::time::{Duration, Instant};

use common::on_demand::{alive, cli, config, until, Cleanup, TestApp};
use common::{client, sample, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_apps_too_big_together_swap_without_cutting_a_request() {
    let env = Env::new();
    let a = TestApp::new(&env, "a");
    let b = TestApp::new(&env, "b");
    let _cleanup = Cleanup(a.dir.clone());
    let gpu = "    gpu: { device: 0, memory: 6GiB }\n    stop_timeout: 2s\n";
    let _gw = env.start(&config(
        &env,
        &[a.entry(0.2, gpu), b.entry(0.2, gpu)],
        &[a.route("a.test"), b.route("slow.test")],
        "gpus:\n  0: { memory: 10GiB }\n",
    ));
    let c = client(&env, &["a.test", "slow.test"], false);
    // Both tokens at once would be both apps on the card at once.
    let both = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (both, watching) = (both.clone(), watching.clone());
        let (ta, tb) = (a.token(), b.token());
        std::thread::spawn(move || {
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                if ta.exists() && tb.exists() {
                    both.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let get = |host: &str, path: &str| c.get(format!("https://{host}:{}{path}", env.https)).send();
    assert_eq!(get("a.test", "/").await.expect("a").status(), 200);
    // A 5 s request on a, then one for b: b waits for it, and it is not cut.
    let slow = tokio::spawn(get("a.test", "/slow?ms=5000"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    assert_eq!(get("slow.test", "/").await.expect("b").status(), 200);
    assert!(
        asked.elapsed() >= Duration::from_secs(4),
        "b started under a's request"
    );
    let slow = slow.await.expect("task").expect("slow");
    assert_eq!(slow.status(), 200);
    let mut swaps = 1;
    for round in 0..9 {
        let host = if round % 2 == 0 {
            "a.test"
        } else {
            "slow.test"
        };
        let resp = get(host, "/").await.expect("swap");
        assert_eq!(resp.status(), 200, "round {round}");
        swaps += 1;
    }
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    watcher.join().expect("watcher");
    assert!(
        !both.load(std::sync::atomic::Ordering::Relaxed),
        "both apps were loaded at once"
    );
    let (_, metrics) = env.metrics_get("/metrics").await;
    let stops = |app: &str| {
        sample(
            &metrics,
            &format!("gateway_app_stops_total{{app=\"{app}\",reason=\"room\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(stops("a") + stops("b"), swaps as f64, "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            "gateway_gpu_memory_bytes{device=\"0\",kind=\"budget\"}"
        ),
        Some(10737418240.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exclusive_group_and_a_kept_app() {
    let env = Env::new();
    let x = TestApp::new(&env, "x");
    let y = TestApp::new(&env, "y");
    let kept = TestApp::new(&env, "kept");
    let big = TestApp::new(&env, "big");
    let _cleanup = Cleanup(x.dir.clone());
    let _gw = env.start(&config(
        &env,
        &[
            x.entry(0.1, "    group: studio\n"),
            y.entry(0.1, "    group: studio\n"),
            kept.entry(0.1, "    group: core\n    gpu: { memory: 6GiB }\n"),
            big.entry(0.1, "    gpu: { memory: 6GiB }\n    start_timeout: 2s\n"),
        ],
        &[x.route("a.test"), y.route("slow.test"), kept.route("up.test"), big.route("down.test")],
        "gpus:\n  0: { memory: 10GiB }\ngroups:\n  studio: { exclusive: true }\n  core: { keep_loaded: true }\n",
    ));
    let c = client(
        &env,
        &["a.test", "slow.test", "up.test", "down.test"],
        false,
    );
    let get = |host: &str| c.get(format!("https://{host}:{}/", env.https)).send();
    assert_eq!(get("a.test").await.expect("x").status(), 200);
    let x_pid = x.pid().expect("x runs");
    assert_eq!(get("slow.test").await.expect("y").status(), 200);
    assert!(!alive(x_pid), "x still runs beside y in an exclusive group");
    // The kept app holds the room the big one needs: the big one never gets it.
    assert_eq!(get("up.test").await.expect("kept").status(), 200);
    let refused = get("down.test").await.expect("big");
    assert_eq!(refused.status(), 504);
    assert!(kept.running() && !big.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_exclusive_apps_wanted_at_once_both_serve_their_requests() {
    let env = Env::new();
    let x = TestApp::new(&env, "x");
    let y = TestApp::new(&env, "y");
    let _cleanup = Cleanup(x.dir.clone());
    let _gw = env.start(&config(
        &env,
        &[
            x.entry(0.5, "    group: studio\n    start_timeout: 1m\n"),
            y.entry(0.5, "    group: studio\n    start_timeout: 1m\n"),
        ],
        &[x.route("a.test"), y.route("slow.test")],
        "groups:\n  studio: { exclusive: true }\n",
    ));
    let c = client(&env, &["a.test", "slow.test"], false);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let host = if i % 2 == 0 { "a.test" } else { "slow.test" };
        let url = format!("https://{host}:{}/slow?ms=200", env.https);
        let c = c.clone();
        tasks.spawn(async move { c.get(&url).send().await.map(|r| r.status().as_u16()) });
    }
    let mut codes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        codes.push(done.expect("task").expect("answer"));
    }
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    // Each started once: the app that became ready first served its held requests
    // before it was stopped for the other (not stopped under them, to start again).
    let (_, metrics) = env.metrics_get("/metrics").await;
    let starts = |app: &str| {
        sample(
            &metrics,
            &format!("gateway_app_starts_total{{app=\"{app}\",result=\"ok\"}}"),
        )
    };
    assert_eq!(
        (starts("x"), starts("y")),
        (Some(1.0), Some(1.0)),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_whose_replicas_are_apps_starts_them_all_and_uses_the_ready_ones() {
    let env = Env::new();
    let a = TestApp::new(&env, "a");
    let b = TestApp::new(&env, "b");
    let _cleanup = Cleanup(a.dir.clone());
    let route = format!(
        "  - host: a.test\n    upstream: [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n    app: [a, b]\n    sticky: off\n",
        a.port, b.port
    );
    let _gw = env.start(&config(
        &env,
        &[a.entry(0.3, ""), b.entry(1.5, "")],
        &[route],
        "",
    ));
    let c = client(&env, &["a.test"], false);
    let url = format!("https://a.test:{}/who", env.https);
    // Cold: both start, the first ready answers.
    let first = c.get(&url).send().await.expect("cold");
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.text().await.expect("body"),
        "a",
        "the faster app answers first"
    );
    until("both apps", Duration::from_secs(10), || {
        a.running() && b.running()
    })
    .await;
    env.metrics_until("b ready", |m| {
        sample(m, "gateway_app_state{app=\"b\",state=\"ready\"}") == Some(1.0)
    })
    .await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let resp = c.get(&url).send().await.expect("get");
        assert_eq!(resp.status(), 200);
        seen.insert(resp.text().await.expect("body"));
    }
    assert_eq!(seen.len(), 2, "both replicas serve: {seen:?}");
    // One replica's app stops: the other takes every request.
    let a_pid = a.pid().expect("pid");
    cli(&env, &["apps", "stop", "a"]);
    until("a's stop", Duration::from_secs(10), || !alive(a_pid)).await;
    for _ in 0..10 {
        let resp = c.get(&url).send().await.expect("get");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.expect("body"), "b");
    }
}
