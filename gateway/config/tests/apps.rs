//! `apps`, `groups`, `gpus` and a route's `app`: defaults and mistakes.

use std::time::Duration;

use super::super::*;
use super::{errors, ok};

#[test]
fn an_app_with_every_default() {
    let config = ok("\
routes:
  - host: voice.example
    upstream: 127.0.0.1:7860
    app: voice
apps:
  voice:
    run: sh -c true
");
    let app = config.apps.get("voice").expect("voice");
    assert_eq!(config.routes[0].app.as_deref(), Some("voice"));
    let Control::Run(run) = &app.control else {
        panic!("run");
    };
    assert!(run.argv[0].ends_with("/sh"), "{:?}", run.argv);
    assert_eq!(&run.argv[1..], ["-c", "true"]);
    assert!(run.log.ends_with("apps/voice.log"), "{:?}", run.log);
    // `ready` defaults to the route's upstream.
    assert_eq!(app.ready.url.text, "http://127.0.0.1:7860/");
    assert_eq!(app.ready.interval, DEFAULT_READY_INTERVAL);
    assert_eq!(app.start_timeout, Duration::from_secs(300));
    assert_eq!(app.idle_stop, None);
    assert_eq!(app.stop_timeout, Duration::from_secs(10));
    assert_eq!(app.max_waiting, 100);
    assert!(app.stop_on_exit);
    assert_eq!(app.gpu, None);
}

#[test]
fn apps_groups_and_gpus_written_out() {
    let config = ok("\
gpus:
  0: { memory: 24GiB }
groups:
  studio: { exclusive: true }
  core: { keep_loaded: true }
routes:
  - host: a.example
    upstream: 7860
    app: clone
  - host: b.example
    upstream: 7861
    app: heygem
apps:
  clone:
    run: [/bin/sh, -c, \"exec sleep 100\"]
    env: { CUDA_VISIBLE_DEVICES: 0, MODE: fast }
    ready: { url: \"http://127.0.0.1:7860/health\", interval: 250ms }
    start_timeout: 10m
    idle_stop: 10s
    stop_timeout: 3s
    gpu: { device: 0, memory: 12GiB }
    group: [studio, core]
    max_waiting: 5
    wake: { ignore_user_agents: [UptimeRobot], ignore_paths: [/favicon.ico, /static/*] }
    stop_on_exit: false
  heygem:
    start: systemctl start heygem
    stop: [systemctl, stop, heygem]
    ready: http://localhost:8383/
    gpu: { memory: 10G }
    group: studio
");
    let clone = config.apps.get("clone").expect("clone");
    assert_eq!(config.apps.gpus.get(&0), Some(&(24 << 30)));
    assert_eq!(
        clone.gpu,
        Some(GpuNeed {
            device: 0,
            memory: 12 << 30
        })
    );
    assert_eq!(clone.groups, ["studio", "core"]);
    assert_eq!(clone.ready.url.path, "/health");
    assert_eq!(clone.ready.interval, Duration::from_millis(250));
    assert_eq!(clone.idle_stop, Some(Duration::from_secs(10)));
    assert_eq!(clone.max_waiting, 5);
    assert!(!clone.stop_on_exit);
    let Control::Run(run) = &clone.control else {
        panic!("run");
    };
    assert_eq!(
        run.env,
        [
            ("CUDA_VISIBLE_DEVICES".into(), "0".into()),
            ("MODE".into(), "fast".into())
        ]
    );
    assert!(clone
        .wake
        .ignores(Some(b"Mozilla/5.0 (compatible; UptimeRobot/2.0)"), "/"));
    assert!(clone.wake.ignores(None, "/favicon.ico"));
    assert!(clone.wake.ignores(None, "/static/app.js"));
    assert!(!clone.wake.ignores(Some(b"curl/7.88"), "/api"));
    let heygem = config.apps.get("heygem").expect("heygem");
    assert_eq!(
        heygem.control,
        Control::Commands {
            start: vec!["systemctl".into(), "start".into(), "heygem".into()],
            stop: vec!["systemctl".into(), "stop".into(), "heygem".into()],
        }
    );
    let studio = config.apps.group("studio").expect("studio");
    assert!(studio.exclusive && !studio.keep_loaded);
    assert!(config.apps.group("core").expect("core").keep_loaded);
}

#[test]
fn app_mistakes_are_reported_with_their_place() {
    let found = errors(
        "\
gpus:
  0: { memory: 24GiB }
routes:
  - host: a.example
    upstream: 7860
    app: vocie
  - host: b.example
    upstream: [7861, 7862]
    app: big
apps:
  big:
    run: [no-such-program-here, --port, 1]
    gpu: { device: 1, memory: 8G }
  huge:
    run: ./missing.sh
    ready: http://127.0.0.1:1/
    gpu: { device: 0, memory: 30GiB }
    group: nowhere
  both:
    run: [sh]
    start: [true]
    ready: https://127.0.0.1:1/
  half:
    start: [systemctl, start, half]
    ready: http://127.0.0.1:2/
    idle_stop: soon
    colour: blue
",
    );
    let expected = [
        "routes.yaml:6:10: routes[0].app: no app \"vocie\" in `apps` (known: big, huge, both, half)",
        "routes.yaml:12:5: apps.big: missing `ready`",
        "routes.yaml:12:10: apps.big.run: \"no-such-program-here\" is not found in PATH",
        "routes.yaml:13:20: apps.big.gpu.device: device 1 has no budget: add gpus: { 1: { memory: 24GiB } }",
        "routes.yaml:15:10: apps.huge.run: ",
        "routes.yaml:17:31: apps.huge.gpu.memory: 30 GiB is more than device 0's whole budget (24 GiB)",
        "routes.yaml:18:12: apps.huge.group: no group \"nowhere\" in `groups`",
        "routes.yaml:20:5: apps.both: give either `run`",
        "routes.yaml:22:12: apps.both.ready: invalid url \"https://127.0.0.1:1/\"",
        "routes.yaml:24:5: apps.half: `start` needs `stop` too",
        "routes.yaml:26:16: apps.half.idle_stop: invalid duration \"soon\"",
        "routes.yaml:27:13: apps.half.colour: unknown key \"colour\"",
    ];
    for e in expected {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "missing {e:?} in\n{}",
            found.join("\n")
        );
    }
    assert!(
        found
            .iter()
            .any(|f| f.contains("apps.huge.run: ")
                && f.contains("missing.sh is not an executable file")),
        "{found:?}"
    );
}

#[test]
fn an_app_route_is_checked_by_ready_not_health() {
    let found = errors(
        "\
routes:
  - host: a.example
    upstream: 7860
    app: a
    health: { path: /healthz }
apps:
  a: { run: [sh], ready: \"http://127.0.0.1:7860/\" }
",
    );
    assert!(
        found[0].starts_with("routes.yaml:5:15: routes[0].health: a route with `app` is checked by the app's `ready` URL"),
        "{found:?}"
    );
    let found = errors("routes:\n  - host: a.example\n    upstream: 7860\n    app: a\n");
    assert!(
        found[0].starts_with(
            "routes.yaml:4:10: routes[0].app: no app \"a\": there is no `apps` section"
        ),
        "{found:?}"
    );
}

#[test]
fn a_pool_names_one_app_per_replica() {
    let config = ok("\
routes:
  - host: a.example
    upstream: [7860, 7861]
    app: [one, two]
apps:
  one: { run: [sh] }
  two: { run: [sh] }
");
    let route = &config.routes[0];
    assert_eq!(route.app, None);
    assert_eq!(route.replica_apps, ["one", "two"]);
    // No default health checks on replicas that are apps; each app's `ready` is its
    // replica's address.
    assert_eq!(route.pool.health, None);
    assert_eq!(
        config.apps.get("two").expect("two").ready.url.text,
        "http://127.0.0.1:7861/"
    );
    let found = errors(
        "\
routes:
  - host: a.example
    upstream: [7860, 7861]
    app: [one]
  - host: b.example
    upstream: [7862, 7863]
    app: [one, one]
apps:
  one: { run: [sh], ready: \"http://127.0.0.1:7860/\" }
",
    );
    assert!(
        found[0].starts_with("routes.yaml:4:10: routes[0].app: 1 apps for 2 upstreams"),
        "{found:?}"
    );
    assert!(
        found[1].starts_with("routes.yaml:7:16: routes[1].app[1]: \"one\" is listed twice"),
        "{found:?}"
    );
}
