//! Issue 30 against the real binary: API keys issued by `gateway key new`, presented by
//! the OpenAI Python SDK (streaming from a real uvicorn app), by a WebSocket client in
//! the query, and by plain HTTP clients; revoked by editing the file; limited per key
//! (a rate shared by two gateways through a real `redis-server`, `max_concurrent`, its
//! routes); and the caller's identity passed to the app in a field no client can forge.
//! (`gradio_client` against a real Gradio app is in the e2e suite.)

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::apps::{App, Server};
use common::redis::Redis;
use common::{client, hash_password, sample, Env, Gateway};
use futures_util::StreamExt;
use serde_json::Value;

/// `gateway key new NAME ARGS…`: the secret and the entry to store.
fn new_key(name: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["key", "new", name])
        .args(args)
        .output()
        .expect("gateway key new");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let secret = text
        .lines()
        .find(|l| l.starts_with("gwk_"))
        .expect("the key");
    let entry = text
        .lines()
        .find(|l| l.starts_with("- {"))
        .expect("the entry");
    (secret.to_string(), entry.to_string())
}

/// An entry with more settings than `gateway key new` writes (`extra`: `k: v, …`).
fn with(entry: &str, extra: &str) -> String {
    format!("{}, {extra} }}", entry.trim_end_matches('}').trim_end())
}

/// Replaces `keys.yaml` the way an operator should: written aside, then renamed.
fn write_keys(env: &Env, entries: &[&str]) {
    let aside = env.path("keys.yaml.new");
    std::fs::write(&aside, entries.join("\n") + "\n").expect("write keys");
    std::fs::rename(&aside, env.path("keys.yaml")).expect("rename keys");
}

fn config(env: &Env, top: &str, routes: &str) -> String {
    format!(
        "{}api_keys: {{ file: keys.yaml }}\naccess_log: {}\n{top}routes:\n{routes}",
        env.listen_and_tls(),
        env.path("access.log").display()
    )
}

/// A route named `name` for `host` in front of `app`, with `extra` keys.
fn route(host: &str, name: &str, app: &App, extra: &str) -> String {
    format!(
        "  - host: {host}\n    name: {name}\n    upstream: 127.0.0.1:{}\n{extra}",
        app.port()
    )
}

/// `GET https://HOST/PATH` with `headers`: the status, the answer's headers, its JSON.
async fn get(
    c: &reqwest::Client,
    env: &Env,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    common::get_json(c, &format!("https://{host}:{}{path}", env.https), headers).await
}

/// The values of `name` among the request fields the app reported.
fn seen_field(json: &Value, name: &str) -> Vec<String> {
    json["headers"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|h| h[0] == name)
                .filter_map(|h| h[1].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The OpenAI Python SDK streaming one chat completion from `base`: its exit code and
/// what it printed.
async fn sdk(env: &Env, base: &str, key: &str) -> (i32, String) {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps");
    let ca = env.path("certs/default.pem");
    let (base, key) = (base.to_string(), key.to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python.join(".venv/bin/python"))
            .arg(python.join("openai_client.py"))
            .args([&base, &key])
            .arg(ca)
            .output()
            .expect("python")
    })
    .await
    .expect("sdk");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.is_empty() || out.status.code() == Some(0),
        "{stderr}"
    );
    let code = out.status.code().unwrap_or(-1);
    (
        code,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_streams_with_its_key_and_a_revoked_key_is_refused_within_10_s() {
    let env = Env::new();
    let app = App::start(Server::Uvicorn);
    let (secret, entry) = new_key("ci", &[]);
    let (notebook, notebook_entry) = new_key("notebook", &["--routes", "other"]);
    write_keys(&env, &[&entry, &notebook_entry]);
    let keyed = "    api_keys: true\n    identity_header: X-Forwarded-User\n";
    let routes = route("a.test", "llm", &app, keyed) + &route("up.test", "other", &app, keyed);
    let gw = env.start(&config(&env, "", &routes));
    let base = format!("https://a.test:{}/v1", env.https);

    // The SDK sends `Authorization: Bearer KEY`: the app gets the key's name, not the key.
    let (code, said) = sdk(&env, &base, &secret).await;
    assert_eq!((code, said.as_str()), (0, "Hello from ci no-authorization"));

    // Without a key: 401, `WWW-Authenticate: Bearer`, and JSON an SDK can show.
    let c = client(&env, &["a.test", "up.test"], false);
    let resp = c
        .post(format!("{base}/chat/completions"))
        .header("accept", "application/json")
        .body("{}")
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "missing_api_key", "{body}");
    // A key that is not one, through the SDK: refused, never passed to the app.
    let (code, said) = sdk(&env, &base, "gwk_not-a-key").await;
    assert_eq!(
        (code, said.as_str()),
        (3, "401 Error code: 401 - Invalid API key.")
    );

    // A key limited to one route: 401 on another (even with a page for a browser).
    let html = [("x-api-key", notebook.as_str()), ("accept", "text/html")];
    let (status, headers, _) = get(&c, &env, "a.test", "/", &html).await;
    assert_eq!(status, 401);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    let (status, _, seen) = get(&c, &env, "up.test", "/", &html[..1]).await;
    assert_eq!(status, 200);
    assert_eq!(seen_field(&seen, "x-forwarded-user"), ["notebook"]);

    // Revoked: removed from the file, refused within 10 s, no restart.
    write_keys(&env, &[&notebook_entry]);
    let revoked = Instant::now();
    let bearer = format!("Bearer {secret}");
    let mut still_accepted = 0.0;
    loop {
        let (status, _, _) = get(&c, &env, "a.test", "/", &[("authorization", &bearer)]).await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        still_accepted += 1.0;
        assert!(
            revoked.elapsed() < Duration::from_secs(10),
            "still accepted:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("revoked key refused after {:?}", revoked.elapsed());
    let (code, said) = sdk(&env, &base, &secret).await;
    assert_eq!(
        (code, said.as_str()),
        (3, "401 Error code: 401 - Invalid API key.")
    );

    // Counted by key, route and status; the access log names the key, never the secret.
    let metrics = env
        .metrics_until("the key's requests counted", |m| {
            sample(m, r#"gateway_rejected_total{reason="api_key",route="llm"}"#) >= Some(4.0)
        })
        .await;
    let ok = r#"gateway_api_key_requests_total{code="200",key="ci",route="llm"}"#;
    assert_eq!(
        sample(&metrics, ok),
        Some(1.0 + still_accepted),
        "{metrics}"
    );
    let other = r#"gateway_api_key_requests_total{code="200",key="notebook",route="other"}"#;
    assert_eq!(sample(&metrics, other), Some(1.0), "{metrics}");
    let log = std::fs::read_to_string(env.path("access.log")).expect("access log");
    assert!(
        log.contains(r#""route":"llm","#) && log.contains(r#""user":"ci""#),
        "{log}"
    );
    assert!(!log.contains(&secret) && !log.contains(&notebook), "{log}");
    assert!(!gw.log_text().contains(&secret), "{}", gw.log_text());
    assert!(gw
        .log_text()
        .contains("event=api_key_refused route=llm key=notebook reason=api_key_not_allowed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_carries_its_key_in_the_query_and_the_app_never_sees_it() {
    let env = Env::new();
    let app = App::start(Server::Uvicorn);
    let (secret, entry) = new_key("comfy-client", &[]);
    write_keys(&env, &[&entry]);
    let routes = route("a.test", "comfy", &app, "    api_keys: true\n")
        + &route(
            "up.test",
            "cgi",
            &app,
            "    api_keys: true\n    identity_header: X_User\n",
        );
    let _gw = env.start(&config(&env, "", &routes));

    // ComfyUI's client: `/ws?clientId=…`, the key added as `token` (its name encoded,
    // to be sure the gateway reads the parameter as the app's framework would).
    for target in [
        format!("/ws-headers?clientId=7&token={secret}"),
        format!("/ws-headers?t%6Fken={secret}&clientId=7"),
    ] {
        let (mut ws, resp) = env.ws_connect("a.test", &target).await.expect("upgrade");
        assert_eq!(resp.status(), 101);
        let message = ws.next().await.expect("message").expect("frame");
        let seen: Value = serde_json::from_str(message.to_text().expect("text")).expect("json");
        assert_eq!(seen["raw_path"], "/ws-headers", "{seen}");
        assert_eq!(seen["query"], "clientId=7", "{seen}");
        let fields = seen.to_string();
        assert!(!fields.contains(&secret), "{seen}");
    }
    // Without it, or with a wrong one: 401 before any upgrade.
    for target in ["/ws-headers?clientId=7", "/ws-headers?token=gwk_wrong"] {
        match env.ws_connect("a.test", target).await {
            Err(common::WsError::Http(resp)) => assert_eq!(resp.status(), 401, "{target}"),
            other => panic!("{target}: {:?}", other.map(|(_, r)| r.status())),
        }
    }
    // The query counts on WebSocket upgrades only: a key in a plain URL is not taken
    // (it would end up in logs and histories).
    let c = client(&env, &["a.test"], false);
    let (status, _, _) = get(&c, &env, "a.test", &format!("/?token={secret}"), &[]).await;
    assert_eq!(status, 401);
    // An identity field named with `_` (fields with `_` are not kept): its `-` spelling,
    // which a CGI-style app reads as the same, never passes either.
    let c_up = client(&env, &["up.test"], false);
    let forged = [("x-api-key", secret.as_str()), ("x-user", "admin")];
    let (status, _, seen) = get(&c_up, &env, "up.test", "/", &forged).await;
    assert_eq!(status, 200);
    assert_eq!(seen_field(&seen, "x_user"), ["comfy-client"], "{seen}");
    assert!(seen_field(&seen, "x-user").is_empty(), "{seen}");
    // Nothing with the key reached the app.
    let (_, seen) = app.get("/__seen");
    assert!(!seen.to_string().contains(&secret), "{seen}");
}

/// A gateway of its own with the shared store and a copy of the keys.
fn replica(redis: &Redis, entries: &[&str], app: &App) -> (Env, Gateway) {
    let env = Env::new();
    write_keys(&env, entries);
    let store = format!(
        "limits_store:\n  redis: {}\n  timeout: 200ms\n",
        redis.url()
    );
    let routes = route("a.test", "llm", app, "    api_keys: true\n");
    let gw = env.start(&config(&env, &store, &routes));
    (env, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_rate_limit_holds_across_two_gateways_sharing_redis() {
    let app = App::start(Server::Uvicorn);
    let redis_dir = tempfile::tempdir().expect("dir");
    let redis = Redis::start(redis_dir.path());
    let (secret, entry) = new_key("batch", &[]);
    let limited = with(&entry, "rate_limit: { rate: 1/m, burst: 4 }");
    let (other, other_entry) = new_key("other", &[]);
    let (a_env, _a) = replica(&redis, &[&limited, &other_entry], &app);
    let (b_env, _b) = replica(&redis, &[&limited, &other_entry], &app);
    let a = client(&a_env, &["a.test"], false);
    let b = client(&b_env, &["a.test"], false);
    let key = [("x-api-key", secret.as_str())];
    let mut codes = Vec::new();
    let mut last = None;
    for i in 0..5 {
        let (c, env) = if i % 2 == 0 {
            (&a, &a_env)
        } else {
            (&b, &b_env)
        };
        let (status, headers, _) = get(c, env, "a.test", "/", &key).await;
        codes.push(status);
        last = Some(headers);
    }
    assert_eq!(codes, [200, 200, 200, 200, 429]);
    let headers = last.expect("headers");
    let retry: u64 = headers["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("secs");
    assert!((1..=60).contains(&retry), "{headers:?}");
    assert!(headers["ratelimit-policy"]
        .to_str()
        .expect("text")
        .contains("q=4"));
    // The bucket is the key's: another key through the same gateways is not limited.
    let (status, _, _) = get(&b, &b_env, "a.test", "/", &[("x-api-key", &other)]).await;
    assert_eq!(status, 200);
    assert!(!redis.keys("gateway:keyrate:batch:*").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_max_concurrent_holds_with_five_slow_requests() {
    let env = Env::new();
    let app = App::start(Server::Uvicorn);
    let (secret, entry) = new_key("gpu-batch", &[]);
    write_keys(&env, &[&with(&entry, "max_concurrent: 2")]);
    let _gw = env.start(&config(
        &env,
        "",
        &route("a.test", "llm", &app, "    api_keys: true\n"),
    ));
    let c = client(&env, &["a.test"], false);
    // A WebSocket session holds none of the key's places once the app accepted it.
    let ws_target = format!("/ws?token={secret}");
    let (mut ws, _) = env.ws_connect("a.test", &ws_target).await.expect("upgrade");
    // Slow enough that the first two are still in progress when the last arrives on a
    // loaded machine.
    let slow = (0..5).map(|_| {
        let (c, env, secret) = (c.clone(), &env, secret.clone());
        async move {
            let key = [("x-api-key", secret.as_str())];
            let (status, headers, _) = get(&c, env, "a.test", "/slow?ms=4000", &key).await;
            (status, headers.get("retry-after").cloned())
        }
    });
    let answers = futures_util::future::join_all(slow).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let busy: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!((ok, busy.len()), (2, 3), "{answers:?}");
    assert!(busy
        .iter()
        .all(|(_, retry)| retry.as_ref().is_some_and(|r| r == "1")));
    // Their places are given back.
    let key = [("x-api-key", secret.as_str())];
    let (status, _, _) = get(&c, &env, "a.test", "/slow?ms=1", &key).await;
    assert_eq!(status, 200);
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text("still open")).await.expect("send");
    let echo = ws.next().await.expect("echo").expect("frame");
    assert_eq!(echo.to_text().expect("text"), "still open");
    let metrics = env
        .metrics_until("the busy answers counted", |m| {
            sample(
                m,
                r#"gateway_rejected_total{reason="api_key_concurrency",route="llm"}"#,
            ) == Some(3.0)
        })
        .await;
    let ok = r#"gateway_api_key_requests_total{code="200",key="gpu-batch",route="llm"}"#;
    assert_eq!(sample(&metrics, ok), Some(3.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_field_carries_the_key_or_the_user_and_never_the_clients_own() {
    let env = Env::new();
    let app = App::start(Server::Uvicorn);
    let (secret, entry) = new_key("ci", &[]);
    write_keys(&env, &[&entry]);
    let alice = hash_password("wonderland");
    let login = format!(
        "    api_keys: true\n    identity_header: X-Forwarded-User\n    basic_auth: {{ users: {{ alice: \"{alice}\" }} }}\n    auth_failures: {{ limit: 3, per: 1m }}\n"
    );
    let routes = route("a.test", "webui", &app, &login)
        + &route(
            "up.test",
            "open",
            &app,
            "    identity_header: X-Forwarded-User\n",
        );
    // Fields with `_` kept, so that the CGI spelling of the field is tried too.
    let top = "limits: { underscores_in_headers: true }\n";
    let _gw = env.start(&config(&env, top, &routes));
    let c = client(&env, &["a.test", "up.test"], false);
    let forged = [("x-forwarded-user", "admin"), ("x_forwarded_user", "admin")];
    let user = |json: &Value| {
        let mut all = seen_field(json, "x-forwarded-user");
        all.extend(seen_field(json, "x_forwarded_user"));
        all
    };

    // The key's name. A bearer token without the key prefix (a Hugging Face token) is
    // not taken for a second key.
    let mut headers = forged.to_vec();
    headers.push(("x-api-key", &secret));
    headers.push(("authorization", "Bearer hf_app_token"));
    let (status, _, seen) = get(&c, &env, "a.test", "/", &headers).await;
    assert_eq!(
        (status, user(&seen)),
        (200, vec!["ci".to_string()]),
        "{seen}"
    );
    assert!(seen_field(&seen, "x-api-key").is_empty());
    assert!(seen_field(&seen, "authorization").is_empty());
    // The Basic user (and the client's `Authorization` is not passed on).
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "alice:wonderland"
        )
    );
    let mut headers = forged.to_vec();
    headers.push(("authorization", &basic));
    let (status, _, seen) = get(&c, &env, "a.test", "/", &headers).await;
    assert_eq!(
        (status, user(&seen)),
        (200, vec!["alice".to_string()]),
        "{seen}"
    );
    assert!(seen_field(&seen, "authorization").is_empty());
    // A key in a plain URL is not read (the password decides) and does not go on.
    let target = format!("/?x=1&token={secret};y=2");
    let (status, _, seen) = get(&c, &env, "a.test", &target, &headers).await;
    assert_eq!(
        (status, seen["query"].as_str()),
        (200, Some("x=1;y=2")),
        "{seen}"
    );
    // No credentials: the route's other login asks, and nothing reaches the app.
    let (status, headers, _) = get(&c, &env, "a.test", "/", &forged).await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"]
        .to_str()
        .expect("text")
        .starts_with("Basic"));
    // A public route with the field: the client's own never passes.
    let (status, _, seen) = get(&c, &env, "up.test", "/", &forged).await;
    assert_eq!((status, user(&seen)), (200, Vec::<String>::new()), "{seen}");

    // A wrong key never falls through to the password, and counts as a failed login.
    let mut headers = vec![("authorization", basic.as_str())];
    headers.push(("x-api-key", "gwk_guess"));
    for _ in 0..3 {
        let (status, headers, _) = get(&c, &env, "a.test", "/", &headers).await;
        assert_eq!(status, 401);
        assert_eq!(
            headers["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
    }
    let (status, _, _) = get(&c, &env, "a.test", "/", &[("authorization", &basic)]).await;
    assert_eq!(
        status, 429,
        "three failed logins block the client's passwords"
    );
    // A valid key cannot have been guessed: it still passes from that address.
    let (status, _, _) = get(&c, &env, "a.test", "/", &[("x-api-key", &secret)]).await;
    assert_eq!(status, 200);
}
