//! Issue 26, item 4, against the real binary: guesses sent together count against the
//! failed-login limit, one address cannot hold the password verifier for everyone, the
//! same credentials at once are verified once, and a burst of right passwords is served.
//! Addresses other than 127.0.0.1 are the trusted balancer's `X-Forwarded-For`.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::{client, Env, Upstream};

/// `Basic base64(user:password)`.
fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// An htpasswd file of `users` users named `u0`, `u1`… all with `password`, under one
/// bcrypt hash of `cost` (10: about 55 ms a verification here, as the review measured).
fn users_file(env: &Env, users: usize, password: &str, cost: u32) -> std::path::PathBuf {
    let hash = bcrypt::hash(password, cost).expect("bcrypt");
    let lines: String = (0..users).map(|i| format!("u{i}:{hash}\n")).collect();
    let path = env.path("users.htpasswd");
    std::fs::write(&path, lines).expect("write htpasswd");
    path
}

fn config(env: &Env, up: &Upstream, file: &std::path::Path, failures: &str) -> String {
    format!(
        "{}trusted_proxies: [127.0.0.1]\nroutes:\n\
         - host: a.test\n  upstream: {up}\n  basic_auth: {{ htpasswd: {file} }}\n  auth_failures: {failures}\n\
         - host: up.test\n  upstream: {up}\n  basic_auth: {{ htpasswd: {file} }}\n\
         - host: slow.test\n  upstream: {up}\n",
        env.listen_and_tls(),
        up = up.addr,
        file = file.display(),
    )
}

/// Sends `n` requests to `host` at once, the i-th with `auth(i)` from `from(i)`; returns
/// each status and how long it took.
async fn burst(
    c: &reqwest::Client,
    env: &Env,
    host: &str,
    n: usize,
    auth: impl Fn(usize) -> String,
    from: impl Fn(usize) -> String,
) -> Vec<(u16, Duration)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let req = c
                .get(format!("https://{host}:{}/echo", env.https))
                .header("authorization", auth(i))
                .header("x-forwarded-for", from(i))
                .timeout(Duration::from_secs(60));
            tokio::spawn(async move {
                let started = Instant::now();
                let status = req.send().await.map_or(0, |r| r.status().as_u16());
                (status, started.elapsed())
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("join"));
    }
    out
}

fn count(results: &[(u16, Duration)], status: u16) -> usize {
    results.iter().filter(|(s, _)| *s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_sent_together_count_against_the_failed_login_limit() {
    let up = Upstream::start("A").await;
    let env = Env::new();
    let file = users_file(&env, 1, "right", 10);
    let _gw = env.start(&config(&env, &up, &file, "{ limit: 3, per: 1m }"));
    let c = client(&env, &["a.test"], false);
    // Sixty guesses from one address, each on its own connection, released together.
    let results = burst(
        &c,
        &env,
        "a.test",
        60,
        |i| basic("u0", &format!("guess-{i}")),
        |_| "192.0.2.7".into(),
    )
    .await;
    assert_eq!(count(&results, 401), 3, "{results:?}");
    assert_eq!(count(&results, 429), 57, "{results:?}");
    // The limit holds for the right password too now, and for nobody else.
    let results = burst(
        &c,
        &env,
        "a.test",
        1,
        |_| basic("u0", "right"),
        |_| "192.0.2.7".into(),
    )
    .await;
    assert_eq!(results[0].0, 429);
    let results = burst(
        &c,
        &env,
        "a.test",
        1,
        |_| basic("u0", "right"),
        |_| "192.0.2.8".into(),
    )
    .await;
    assert_eq!(results[0].0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_guessing_does_not_delay_another_s_login() {
    let up = Upstream::start("A").await;
    let env = Env::new();
    let file = users_file(&env, 2, "right", 10);
    // No failure limit on a.test: every guess is verified, the most an address can ask.
    let _gw = env.start(&config(&env, &up, &file, "off"));
    let c = client(&env, &["a.test", "up.test"], false);
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let guesses: Vec<_> = (0..200)
        .map(|i| {
            let req = c
                .get(format!("https://a.test:{}/echo", env.https))
                .header("authorization", basic("u0", &format!("guess-{i}")))
                .header("x-forwarded-for", "192.0.2.66")
                .timeout(Duration::from_secs(120));
            let answered = answered.clone();
            tokio::spawn(async move {
                let status = req.send().await.map_or(0, |r| r.status().as_u16());
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                status
            })
        })
        .collect();
    // Once the guesses are queued (the first answers come back), another address logs in:
    // it waits for at most the guesser's few verifications in the queue, not for all 200.
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no guess answered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let login = burst(
        &c,
        &env,
        "up.test",
        1,
        |_| basic("u1", "right"),
        |_| "198.51.100.1".into(),
    )
    .await;
    let (status, took) = login[0];
    let done = answered.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(status, 200);
    println!("a right login beside 200 guesses from another address took {took:?}; {done} guesses answered by then");
    assert!(
        done < 100,
        "the login waited for the guesses: {done} answered first, {took:?}"
    );
    for g in guesses {
        let status = g.await.expect("join");
        assert!(status != 200, "a guess got in");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_right_passwords_is_served_and_public_routes_stay_fast() {
    let up = Upstream::start("A").await;
    let env = Env::new();
    // Cost 6 (a few ms) keeps two hundred verifications within the test's time on one
    // busy CPU, where the verifiers (nice 10) get a tenth of it; `LOGIN_BURST_COST=10`
    // runs the review's case (figures in docs/access.md).
    let cost = std::env::var("LOGIN_BURST_COST")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(6);
    let file = users_file(&env, 200, "right", cost);
    let _gw = env.start(&config(&env, &up, &file, "{ limit: 10, per: 1m }"));
    let c = client(&env, &["a.test", "slow.test"], false);
    // A public route polled every 20 ms while the logins run.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poll = tokio::spawn({
        let c = c.clone();
        let url = format!("https://slow.test:{}/echo", env.https);
        let done = done.clone();
        async move {
            let mut took = Vec::new();
            let until = Instant::now() + Duration::from_secs(60);
            while Instant::now() < until && !done.load(std::sync::atomic::Ordering::SeqCst) {
                let started = Instant::now();
                let ok = c.get(&url).send().await.is_ok_and(|r| r.status() == 200);
                took.push((ok, started.elapsed()));
                if took.len() >= 2000 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            took
        }
    });
    let started = Instant::now();
    // Two hundred users behind one NAT address, each with its right password, on one
    // HTTP/2 connection (so the machine's work is the logins, not 200 handshakes).
    let logins = client(&env, &["a.test"], true);
    let results = burst(
        &logins,
        &env,
        "a.test",
        200,
        |i| basic(&format!("u{i}"), "right"),
        |_| "203.0.113.5".into(),
    )
    .await;
    let elapsed = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(count(&results, 200), 200, "{results:?}");
    let mut polled = poll.await.expect("join");
    assert!(polled.iter().all(|(ok, _)| *ok));
    polled.sort_by_key(|(_, t)| *t);
    assert!(
        !polled.is_empty(),
        "the public route was polled during the logins"
    );
    let p99 = polled[(polled.len() * 99 / 100).min(polled.len() - 1)].1;
    println!(
        "200 logins in {elapsed:?}; public route p99 {p99:?} over {} polls",
        polled.len()
    );
    // A bound that holds on one busy CPU. The review's case (cost 10, `LOGIN_BURST_COST=10`)
    // measured 4 ms here over 346 polls; at cost 6 the burst lasts about a second and its
    // 200 streams, not the verifications, set the worst poll.
    assert!(p99 < Duration::from_secs(1), "{p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_cold_credentials_at_once_are_verified_once() {
    let up = Upstream::start("A").await;
    let env = Env::new();
    let file = users_file(&env, 3, "right", 10);
    let _gw = env.start(&config(&env, &up, &file, "{ limit: 10, per: 1m }"));
    // One HTTP/2 connection, as a browser loads a page; opened (and a first login
    // verified) before anything is timed.
    let c = client(&env, &["a.test"], true);
    let warm = burst(
        &c,
        &env,
        "a.test",
        1,
        |_| basic("u0", "right"),
        |_| "203.0.113.6".into(),
    )
    .await;
    assert_eq!(warm[0].0, 200);
    let one = burst(
        &c,
        &env,
        "a.test",
        1,
        |_| basic("u1", "right"),
        |_| "203.0.113.6".into(),
    )
    .await;
    assert_eq!(one[0].0, 200);
    let single = one[0].1;
    // Fifty asset requests with credentials not verified yet: one verification serves
    // them all, so they take about as long as one login (fifty verifications on two
    // threads would take 25 times as long).
    let started = Instant::now();
    let page = burst(
        &c,
        &env,
        "a.test",
        50,
        |_| basic("u2", "right"),
        |_| "203.0.113.6".into(),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(count(&page, 200), 50, "{page:?}");
    println!("one login {single:?}; fifty at once with the same credentials {took:?}");
    assert!(took < single * 8, "{took:?} against {single:?} for one");
}
