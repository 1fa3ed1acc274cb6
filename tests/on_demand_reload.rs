//! Issue 29 against the real binary: on-demand apps across reloads and a binary upgrade:
//! a running app is kept, a removed one stopped, one added back served.

mod common;

use std::time::{Duration, Instant};

use common::on_demand::{alive, config, until, Cleanup, TestApp};
use common::{client, free_port, sample, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_and_a_binary_upgrade_keep_the_app_running() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let env = Env::new();
    let voice = TestApp::new(&env, "voice");
    let _cleanup = Cleanup(voice.dir.clone());
    let top = format!(
        "upgrade_sock: {}\nupgrade_grace: 30s\n",
        env.path("upgrade.sock").display()
    );
    let text = config(
        &env,
        &[voice.entry(0.5, "    idle_stop: 1h\n")],
        &[voice.route("a.test")],
        &top,
    );
    let mut old = env.start(&text);
    let c = client(&env, &["a.test"], false);
    let url = format!("https://a.test:{}/x", env.https);
    assert_eq!(c.get(&url).send().await.expect("first").status(), 200);
    let pid = voice.pid().expect("pid");
    let (mut ws, _) = env.ws_connect("a.test", "/ws").await.expect("websocket");
    for i in 0..10 {
        // One at a time: signals sent faster than reloads run would merge.
        old.signal(libc::SIGHUP);
        let done = (i + 1) as f64;
        env.metrics_until("the reload", |m| {
            sample(m, "gateway_config_reloads_total{result=\"success\"}") == Some(done)
        })
        .await;
        ws.send(Message::text(format!("m{i}"))).await.expect("send");
        let got = ws.next().await.expect("frame").expect("message");
        assert_eq!(
            got.into_text().expect("text").as_str(),
            format!("voice: m{i}")
        );
        assert_eq!(c.get(&url).send().await.expect("get").status(), 200);
    }
    let sock = env.path("upgrade.sock");
    let mut new = env.spawn(&env.path("routes.yaml"), &["--upgrade"], "gateway-new.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "{}", new.log_text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    old.signal(libc::SIGQUIT);
    until(
        "the new process's adoption",
        Duration::from_secs(20),
        || new.log_text().contains("event=app_adopted app=voice"),
    )
    .await;
    ws.send(Message::text("after")).await.expect("send");
    let got = ws.next().await.expect("frame").expect("message");
    assert_eq!(got.into_text().expect("text").as_str(), "voice: after");
    ws.close(None).await.expect("close");
    let status = tokio::task::block_in_place(|| old.wait_exit(Duration::from_secs(30)));
    assert_eq!(
        status.map(|s| s.code()),
        Some(Some(0)),
        "{}",
        old.log_text()
    );
    let c = client(&env, &["a.test"], false);
    assert_eq!(c.get(&url).send().await.expect("new").status(), 200);
    assert_eq!(voice.pid(), Some(pid));
    assert!(alive(pid));
    let log = new.log_text();
    assert!(
        log.contains(&format!(
            "event=app_adopted app=voice pid={pid} serving=true"
        )),
        "{log}"
    );
    assert!(!log.contains("event=app_start "), "{log}");
    assert_eq!(old.log_text().matches("event=app_start ").count(), 1);
    // The adopted app is the new process's to stop.
    new.signal(libc::SIGTERM);
    new.wait_exit(Duration::from_secs(20)).expect("exit");
    assert!(!alive(pid), "{}", new.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_that_removes_an_app_stops_it_and_one_that_adds_it_back_serves_it() {
    let env = Env::new();
    let voice = TestApp::new(&env, "voice");
    let _cleanup = Cleanup(voice.dir.clone());
    let with = config(&env, &[voice.entry(0.2, "")], &[voice.route("a.test")], "");
    let gw = env.start(&with);
    let c = client(&env, &["a.test"], false);
    let url = format!("https://a.test:{}/x", env.https);
    assert_eq!(c.get(&url).send().await.expect("get").status(), 200);
    let pid = voice.pid().expect("pid");
    // A browser form's POST is held, not answered with the waiting page.
    let without = format!(
        "{}routes:\n  - host: up.test\n    upstream: \"127.0.0.1:{}\"\n",
        env.listen_and_tls(),
        free_port()
    );
    env.write_config(&without);
    gw.signal(libc::SIGHUP);
    until("the removed app's stop", Duration::from_secs(10), || {
        !alive(pid)
    })
    .await;
    assert!(gw.log_text().contains("event=app_removed app=voice"));
    env.write_config(&with);
    gw.signal(libc::SIGHUP);
    env.metrics_until("two reloads", |m| {
        sample(m, "gateway_config_reloads_total{result=\"success\"}") == Some(2.0)
    })
    .await;
    let form = c
        .post(&url)
        .header("sec-fetch-mode", "navigate")
        .header("accept", "text/html")
        .body("field=1")
        .send()
        .await
        .expect("form");
    assert_eq!(form.status(), 200, "a form POST got the waiting page");
    assert_ne!(voice.pid(), Some(pid));
}
