//! `gateway check` (and `run`) on good and bad configurations: exit codes and the
//! `FILE:LINE:COL: message` lines an operator sees.

mod common;

use common::{check, Env};

fn check_text(env: &Env, text: &str) -> (bool, String, String) {
    let path = env.write_config(text);
    let (status, out, err) = check(&path);
    let file = path.display().to_string();
    (
        status.success(),
        out.replace(&file, "routes.yaml"),
        err.replace(&file, "routes.yaml"),
    )
}

#[test]
fn a_good_config_prints_a_summary() {
    let env = Env::new();
    let text = format!(
        "{}routes:\n  - host: a.test\n    upstream: 1\n  - host: b.test\n    upstream: 2\n    tls: {{ cert: certs/b.pem, key: certs/b.key }}\n",
        env.listen_and_tls()
    );
    let (ok, out, err) = check_text(&env, &text);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        format!(
            "routes.yaml: ok: 2 routes, 1 route certificates, listeners: https 127.0.0.1:{}, http 127.0.0.1:{}, metrics 127.0.0.1:{}\n",
            env.https, env.http, env.metrics
        )
    );
}

#[test]
fn each_kind_of_bad_config_is_reported_with_its_line() {
    let env = Env::new();
    let cases: &[(&str, &str)] = &[
        ("listen:\n  https: [\n", "routes.yaml:3:1: "),
        ("routes:\n  - host: a.test\n    upstream: 1\n    max_bdy: 1G\n", "routes.yaml:4:5: routes[0]: unknown field `max_bdy`"),
        ("routes:\n  - host: a.test\n    upstream: 1\n  - host: A.test\n    upstream: 2\n", "routes.yaml:4:11: routes[1].host: duplicate host \"a.test\" (first at 2:11)"),
        ("listen:\n  https: \"1.2.3:99\"\n", "routes.yaml:2:10: listen.https: invalid address \"1.2.3:99\""),
        ("routes:\n  - host: a.test\n    upstream: \"127.0.0.1:99999\"\n", "routes.yaml:3:15: routes[0].upstream: invalid upstream \"127.0.0.1:99999\""),
        ("defaults:\n  max_body: 12Q\n", "routes.yaml:2:13: defaults.max_body: invalid size \"12Q\""),
        ("defaults:\n  read_timeout: forever\n", "routes.yaml:2:17: defaults.read_timeout: invalid duration \"forever\""),
        ("routes:\n  - host: a.test\n    upstream: 1\n    rate_limit: { rate: fast, burst: 10 }\n", "routes.yaml:4:25: routes[0].rate_limit.rate: invalid rate \"fast\""),
        ("defaults:\n  rate_limit:\n    rate: 20/s\n    burst: -1\n", "routes.yaml:4:12: defaults.rate_limit.burst: invalid burst -1"),
        ("routes:\n  - host: a.test\n    upstream: 1\n    rate_limit: { rate: 1/s, key: cookie }\n", "routes.yaml:4:35: routes[0].rate_limit.key: invalid key \"cookie\""),
        ("routes:\n  - host: a.test\n    upstream: 1\n    rate_limit: { rate: 1/s, burts: 2 }\n", "routes.yaml:4:37: routes[0].rate_limit.burts: unknown key \"burts\""),
        ("routes:\n  - host: a.test\n    upstream: 1\n    rate_limit: 5\n", "routes.yaml:4:17: routes[0].rate_limit: expected `off` or a mapping"),
        ("trusted_proxies: [\"10.0.0.0/33\"]\n", "routes.yaml:1:19: trusted_proxies[0]: invalid CIDR \"10.0.0.0/33\""),
        ("limits:\n  max_header_bytes: 2M\n", "routes.yaml:2:21: limits.max_header_bytes: invalid max_header_bytes \"2M\"; expected a size from 1K to 1M"),
        ("limits:\n  max_headers: 300\n", "routes.yaml:2:16: limits.max_headers: invalid max_headers 300; expected a count from 1 to 256"),
        ("limits: { header_timeout: 0s }\n", "routes.yaml:1:27: limits.header_timeout: invalid header_timeout \"0s\"; expected from 1s to 1h"),
        ("limits: { header_timout: 5s }\n", "routes.yaml:1:11: limits: unknown field `header_timout`"),
        ("routes:\n  - host: a.test\n    upstream: 1\n    allow: []\n", "routes.yaml:4:12: routes[0].allow: an empty list would refuse every client"),
        ("routes:\n  - host: a.test\n    upstream: 1\n    allow: [\"10.0.0.0/8\", \"x\"]\n", "routes.yaml:4:27: routes[0].allow[1]: invalid CIDR \"x\""),
        ("routes:\n  - host: a.test\n    upstream: 1\n    basic_auth: { realm: r }\n", "routes.yaml:4:19: routes[0].basic_auth: no users"),
        ("routes:\n  - host: a.test\n    upstream: 1\n    basic_auth: { users: { a: secret } }\n", "routes.yaml:4:31: routes[0].basic_auth.users.a: not an accepted password hash: a plaintext"),
        ("routes:\n  - host: a.test\n    upstream: 1\n    forward_auth: { copy_headers: [X-User] }\n", "routes.yaml:4:21: routes[0].forward_auth: missing `url`"),
        ("routes:\n  - host: a.test\n    upstream: 1\n    forward_auth: { url: \"ftp://x/y\" }\n", "routes.yaml:4:26: routes[0].forward_auth.url: invalid url \"ftp://x/y\""),
        ("defaults:\n  auth_failures: { limit: 0 }\n", "routes.yaml:2:27: defaults.auth_failures.limit: invalid limit 0"),
        ("routes:\n  - host: a.test\n    upstream: 1\n    pass_authorization: maybe\n", "routes.yaml:4:25: routes[0].pass_authorization: expected true or false"),
        ("tls:\n  cert: certs/missing.pem\n  key: certs/default.key\n", "routes.yaml:2:9: tls.cert: cannot read "),
        ("tls:\n  cert: certs/b.pem\n  key: certs/default.key\n", "routes.yaml:2:9: tls.cert: key "),
        ("tls:\n  cert: certs/b.pem\n  key: certs/none.key\n", "routes.yaml:3:8: tls.key: cannot read "),
        ("tls:\n  cert: certs/b.key\n  key: certs/b.key\n", "routes.yaml:2:9: tls.cert: "),
        (
            "routes:\n  - host: a.test\n    upstream: 1\n    tls:\n      cert: certs/nope.pem\n      key: certs/nope.key\n",
            "routes.yaml:5:13: routes[0].tls.cert: cannot read ",
        ),
    ];
    for (text, expected) in cases {
        let text = if text.starts_with("tls:") {
            format!("{text}routes: []\n")
        } else {
            text.to_string()
        };
        let (ok, out, err) = check_text(&env, &text);
        assert!(!ok, "accepted:\n{text}\n{out}");
        assert!(
            err.starts_with(expected),
            "for:\n{text}\nexpected {expected:?}\ngot {err:?}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn all_errors_are_listed_not_just_the_first() {
    let env = Env::new();
    let (ok, _, err) = check_text(
        &env,
        "defaults:\n  max_body: 12Q\nroutes:\n  - host: a.test\n    upstream: nowhere\n",
    );
    assert!(!ok);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].starts_with("routes.yaml:2:13: "));
    assert!(lines[1].starts_with("routes.yaml:5:15: "));
}

#[test]
fn an_unreadable_file_has_no_position() {
    let env = Env::new();
    let (status, _, err) = check(&env.path("nope.yaml"));
    assert_eq!(status.code(), Some(78), "EX_CONFIG");
    assert!(
        err.contains("nope.yaml: cannot read configuration: "),
        "{err}"
    );
}

#[test]
fn run_refuses_a_bad_config_with_the_same_messages() {
    let env = Env::new();
    let path = env.write_config("defaults:\n  max_body: 12Q\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":2:13: defaults.max_body: invalid size \"12Q\""),
        "{err}"
    );
}

/// A start that fails on something other than the file (here the self-signed default
/// certificate cannot be written) exits with 1, not the configuration's 78: `check`,
/// which writes nothing, passes the same file.
#[test]
fn a_failure_outside_the_config_exits_1() {
    let env = Env::new();
    let text = format!(
        "listen:\n  https: \"127.0.0.1:{}\"\nroutes:\n  - host: a.test\n    upstream: 1\n",
        env.https
    );
    let path = env.write_config(&text);
    // A directory where the key file goes.
    std::fs::create_dir_all(env.path("state/selfsigned.key")).expect("mkdir");
    let (status, _, err) = check(&path);
    assert!(status.success(), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["run", "-c"])
        .arg(&path)
        .env("STATE_DIRECTORY", env.path("state"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(": cannot write ") && err.contains("selfsigned.key"),
        "{err}"
    );
}

/// `hash-password` reads no configuration, so it takes no `-c` (it used to list one and
/// ignore it); `-c` before the command still names the file of `check`.
#[test]
fn only_the_commands_that_read_the_file_take_c() {
    let gateway = || std::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
    let help = gateway()
        .args(["hash-password", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(!help.contains("--config"), "{help}");
    let refused = gateway()
        .args(["hash-password", "-c", "x.yaml"])
        .output()
        .expect("run");
    assert_eq!(refused.status.code(), Some(2), "clap's usage error");
    let env = Env::new();
    let path = env.write_config("routes: []\n");
    let before = gateway()
        .arg("-c")
        .arg(&path)
        .arg("check")
        .output()
        .expect("check");
    assert!(
        before.status.success(),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );
}

#[test]
fn version_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--version")
        .output()
        .expect("run");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("gateway {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn three_different_problems_give_three_positioned_lines() {
    let env = Env::new();
    let text = "\
routes:
  - host: a.test
    upstream: 1
    max_bdy: 1G
  - host: A.test
    upstream: 2
    rate_limit: { rate: fast }
";
    let (ok, _, err) = check_text(&env, text);
    assert!(!ok);
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            "routes.yaml:4:5: routes[0]: unknown field `max_bdy`, expected one of `host`, `path`, `strip_prefix`, `name`, \
             `upstream`, `upstream_host`, `balance`, `health`, `sticky`, `max_concurrent`, `queue`, `max_body`, `connect_timeout`, `read_timeout`, `write_timeout`, \
             `headers`, `tls`, `rate_limit`, `allow`, `basic_auth`, `forward_auth`, `pass_authorization`, `auth_failures`, `app`, `api_keys`, `identity_header`, `compress`; did you mean `max_body`?",
            "routes.yaml:5:11: routes[1].host: duplicate host \"a.test\" (first at 2:11); expected each host once",
            "routes.yaml:7:25: routes[1].rate_limit.rate: invalid rate \"fast\"; expected requests per second, minute or hour like 20/s, 60/m or 1000/h",
        ]
    );
}

/// `gateway check`, as the user the gateway runs as (the unit's `ExecStartPre`), fails
/// wherever `run` would short of binding ports: a directory it must write that it cannot
/// (the state directory of the self-signed certificate, the access log's), a key it
/// cannot read. Run as root, the test drops to `nobody` with setpriv (root may write
/// anywhere); run as another user, it takes the permissions away instead.
#[test]
fn check_fails_where_run_would_as_the_user_it_runs_as() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = Env::new();
    let root = std::fs::metadata("/proc/self").expect("/proc/self").uid() == 0;
    let chmod = |rel: &str, mode: u32| {
        let p = env.path(rel);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    for dir in ["state", "logs"] {
        std::fs::create_dir_all(env.path(dir)).expect("mkdir");
        chmod(dir, if root { 0o755 } else { 0o555 });
    }
    chmod("", 0o755); // the test's directory: readable by `nobody`
    chmod("certs", 0o755);
    chmod("certs/default.pem", 0o644);
    chmod("certs/default.key", if root { 0o600 } else { 0o000 });
    // The gateway as the user under test: `nobody` when the test runs as root, from the
    // test's own directory (the checkout's path may not be open to `nobody`: /root/…).
    let bin = env.path("gateway");
    if root {
        let built = env!("CARGO_BIN_EXE_gateway");
        std::fs::hard_link(built, &bin)
            .or_else(|_| std::fs::copy(built, &bin).map(drop))
            .expect("the binary in the test's directory");
    }
    let bin = match root {
        true => bin.display().to_string(),
        false => env!("CARGO_BIN_EXE_gateway").to_string(),
    };
    let as_user = || {
        let bin = bin.as_str();
        match root {
            true => {
                let mut c = std::process::Command::new("setpriv");
                c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
                c
            }
            false => std::process::Command::new(bin),
        }
    };
    let gateway = |command: &str| {
        let out = as_user()
            .args([command, "-c"])
            .arg(env.path("routes.yaml"))
            .env("STATE_DIRECTORY", env.path("state"))
            .output()
            .expect("gateway");
        let err =
            String::from_utf8_lossy(&out.stderr).replace(&env.path("").display().to_string(), "");
        (out.status.code(), err)
    };
    let uid = if root {
        65534
    } else {
        std::fs::metadata("/proc/self").expect("me").uid()
    };
    // No certificate named: the self-signed one goes to the state directory.
    let listen = format!("listen:\n  https: \"127.0.0.1:{}\"\n", env.https);
    env.write_config(&format!(
        "{listen}access_log: logs/access.log\nroutes:\n  - host: a.test\n    upstream: 1\n"
    ));
    let (code, err) = gateway("check");
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains(&format!("routes.yaml:1:1: tls: state is not writable (EACCES: Permission denied); the gateway writes the self-signed certificate (`tls` names none) there (the state directory, from $STATE_DIRECTORY): make it writable by uid {uid}, or set `state_dir` to a directory that is")),
        "{err}"
    );
    assert!(
        err.contains(&format!("routes.yaml:3:13: access_log: logs is not writable (EACCES: Permission denied); the gateway runs as uid {uid}")),
        "{err}"
    );
    assert_eq!(gateway("run"), (code, err), "run refuses it the same way");
    // ACME's default storage, `acme/` of a writable state directory, left to root by an
    // earlier `sudo gateway run`: checked where run writes, not only its parent.
    let state = env.path("state2");
    std::fs::create_dir_all(state.join("acme")).expect("mkdir");
    if root {
        std::os::unix::fs::chown(&state, Some(65534), Some(65534)).expect("chown");
        chmod("state2/acme", 0o700);
    } else {
        chmod("state2/acme", 0o555);
    }
    env.write_config(&format!(
        "{listen}  http: \"127.0.0.1:{}\"\nstate_dir: state2\ntls: {{ cert: certs/b.pem, key: certs/b.key }}\nroutes:\n  - host: a.test\n    upstream: 1\n    tls: acme\n",
        env.http
    ));
    chmod("certs/b.key", 0o644);
    let (code, err) = gateway("check");
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("state_dir: state2/acme is not writable (EACCES: Permission denied); the gateway writes the ACME account and certificates there"),
        "{err}"
    );
    // A stale self-signed pair the user cannot write (left by root, say) in a directory
    // it can: check passes, so run must replace the pair (by rename) and serve.
    let state = env.path("state3");
    std::fs::create_dir_all(&state).expect("mkdir");
    for file in ["selfsigned.pem", "selfsigned.key"] {
        std::fs::write(state.join(file), "stale").expect("write");
    }
    if root {
        std::os::unix::fs::chown(&state, Some(65534), Some(65534)).expect("chown");
        chmod("state3/selfsigned.key", 0o600);
    } else {
        chmod("state3/selfsigned.key", 0o400);
    }
    env.write_config(&format!(
        "{listen}state_dir: state3\nroutes:\n  - host: a.test\n    upstream: 1\n"
    ));
    let (code, err) = gateway("check");
    assert_eq!(code, Some(0), "{err}");
    let mut child = as_user()
        .args(["run", "-c"])
        .arg(env.path("routes.yaml"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let listening = loop {
        if std::net::TcpStream::connect(("127.0.0.1", env.https)).is_ok() {
            break true;
        }
        if std::time::Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "run did not replace the stale pair and serve");
    let key = std::fs::read_to_string(state.join("selfsigned.key")).expect("key");
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
    // A key the user cannot read.
    env.write_config(&format!(
        "{listen}tls: {{ cert: certs/default.pem, key: certs/default.key }}\nroutes:\n  - host: a.test\n    upstream: 1\n"
    ));
    let (code, err) = gateway("check");
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains("cannot read certs/default.key: Permission denied"),
        "{err}"
    );
}
